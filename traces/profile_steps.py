"""`python -m traces.profile_steps [--out PATH] [--points N] [--reps R] [--model NAME] ...`:
measure real engine steps over a grid of the load quantities the cost model sees.

Each grid point is one engine step built the way `SlotState` builds them: some
tokens (1-48) at loop 1 and/or later loops (a quarter of the points shaped like
depthwise_spec's steps: several rows per request at consecutive positions and loops,
drafting heads at loop 1; under --kv-policy propagate early exits pay their K/V
projections), each of a request with a prompt length and position drawn like the default trace's (so context spread within a step is
realistic), some of them leaving, coda and head on leaving tokens only or on every token
(exit checks), sometimes requests admitted (prefilled) before the step, slots
contiguous or scattered, and under kv_policy=ignore earlier tokens that exited at
loop 1 (their deeper KV missing). The step's `StepLoad` is computed as the engine
would report it, the step is run by `traces.serving.clock.RealSteps` (the same code a
real run uses) and timed; the points are measured in a shuffled order per pass and
the mean over passes is kept (a makespan is a sum of steps: see `profile`). The
profile (JSON, under 1 MB) keeps every point with provenance: device,
threads, dtype, torch version, commit, command and the model layout, plus this
CPU's measured bf16 matmul peak and copy bandwidth for a roofline to compare with.
The requests are synthetic (random token ids: step time does not depend on them),
so no trace request used for validation is ever used for profiling.
"""
from __future__ import annotations

import datetime as dt
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from sim.trace_io import write_atomic

from sim.cost import StepLoad
from sim.cost_profiled import LOAD_COLUMNS, PROFILE_FORMAT, fit, fit_report, feature_names

from .precision import add_dtype_option, dtype_from_args

TOKEN_CHOICES = (1, 2, 3, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48)
PREFILL_CHOICES = (1, 2, 4, 8, 16)
MAX_GEN = 128
SPEC_SHARE = 0.25  # share of grid points shaped like depthwise_spec steps (several rows per slot)


def device_name(device: str) -> str:
    """The device's model name; for a CPU whose name gives no model number (a VM's
    "AMD EPYC"), with its family and model numbers: a profile belongs to one CPU model."""
    import torch
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        info = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
        name = info.get("model name")
        if name:
            numbered = any(ch.isdigit() for ch in name) or "cpu family" not in info
            return name if numbered else f"{name} (family {info['cpu family']} model {info.get('model', '?')})"
    except OSError:
        pass
    return platform.processor() or "cpu"


def default_profile_path(device: str, model: str) -> Path:
    """Where a new profile goes unless told: under runs/, never over a bundled one."""
    slug = "".join(c if c.isalnum() else "_" for c in device_name(device).lower())
    return Path("runs") / "profiles" / f"{'_'.join(w for w in slug.split('_') if w)}_{model}.json"


def machine_peaks(device: str, dtype, timer: str = "wall") -> dict[str, float]:
    """Achievable dense matmul FLOP/s in the compute dtype and copy bandwidth, measured
    here: the roofline's two numbers for this device (medians of a few repeats). `timer`
    "process" times them by CPU time, as steps are on one CPU thread (a shared machine's
    other jobs then slow neither)."""
    import torch
    dev = torch.device(device)
    clock = time.process_time if timer == "process" else time.perf_counter

    def timed(f, reps=5):
        f()
        ts = []
        for _ in range(reps):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = clock()
            f()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            ts.append(clock() - t0)
        return float(np.median(ts))

    n = 1024 if dev.type == "cpu" else 8192
    a = torch.randn(n, n, dtype=dtype, device=dev)
    b = torch.randn(n, n, dtype=dtype, device=dev)
    flops = 2 * n ** 3 / timed(lambda: a @ b)
    src = torch.empty(64 * 2 ** 20 if dev.type == "cpu" else 2 ** 30, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    bw = 2 * src.numel() / timed(lambda: dst.copy_(src))
    return {"peak_tflops": flops / 1e12, "bandwidth_gb_s": bw / 1e9}


class Grid:
    """Random points of the load space, each a (StepLoad, StepBatch, slot setup)."""

    def __init__(self, layout: dict, kv_policy: str, slots: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.layout, self.kv_policy, self.slots = layout, kv_policy, slots
        self.loops = layout["loops"]
        self.edge = bool(layout["prelude_layers"] or layout["coda_layers"])
        # synthetic requests: prompt lengths like the default trace's (36..81, mostly 38..46)
        self.n_req = 4 * slots
        self.prompt_len = np.clip(np.round(self.rng.lognormal(np.log(43), 0.15, self.n_req)), 8, 96).astype(np.int64)

    def sequences(self, vocab: int) -> list[np.ndarray]:
        return [self.rng.integers(0, vocab, size=p + MAX_GEN + 1) for p in self.prompt_len]

    def point(self):
        if self.loops > 1 and self.rng.random() < SPEC_SHARE:
            return self.spec_point()
        return self.single_row_point()

    def spec_point(self):
        """A depthwise_spec step (draft_loops=1): each resident request has k rows in flight at
        consecutive positions q..q+k-1, at loops k..1 (k = loops while its drafts hold, fewer
        after a rejection); rows at loop 1 draft (coda and head), rows at the last loop leave.
        Every loop holds KV at every earlier position (every token runs every loop)."""
        from sim.step import StepBatch
        rng, N = self.rng, self.loops
        m = max(1, int(rng.choice(TOKEN_CHOICES)) // N)
        per = np.where(rng.random(m) < 0.7, N, rng.integers(1, N + 1, size=m))
        slot_ids = np.arange(m) if rng.random() < 0.5 else np.sort(rng.choice(self.slots, m, replace=False))
        reqs_m = rng.choice(self.n_req, m, replace=False)
        start = rng.integers(0, MAX_GEN - N, size=m)
        n_pre = min(int(rng.choice(PREFILL_CHOICES)) if rng.random() < 0.15 else 0, int((per == 1).sum()))
        first = np.flatnonzero(per == 1)[:n_pre]
        start[first] = 0
        slots = np.repeat(slot_ids, per)
        reqs = np.repeat(reqs_m, per)
        offs = np.concatenate([np.arange(k) for k in per])
        pos = np.repeat(start, per) + offs
        loops = np.repeat(per, per) - offs
        leaving, drafting = loops == N, loops == 1
        P = self.prompt_len[reqs]
        full = P + 1 + pos
        heads = leaving | drafting
        enter = loops == 1
        load = StepLoad(tokens=int(pos.size), distinct_loops=int(np.unique(loops).size), context=int(full.sum()),
                        entering=int(enter.sum()), entering_context=int(full[enter].sum()) if self.edge else 0,
                        exiting=int(heads.sum()), exiting_context=int(full[heads].sum()) if self.edge else 0,
                        heads=int(heads.sum()), kv_proj_layers=0,
                        prefill=[int(self.prompt_len[r]) for r in reqs_m[first]])
        valid = [np.ones((1 if self.kv_policy == "share" else N, p_), bool) for p_ in pos]
        batch = StepBatch(slots=slots, requests=reqs, positions=pos, loops=loops, leaving=leaving,
                          admitted=reqs_m[first].astype(np.int64), drafting=drafting)
        return load, batch, False, valid

    def single_row_point(self):
        from sim.step import StepBatch
        rng, N = self.rng, self.loops
        n = int(rng.choice(TOKEN_CHOICES))
        checks = bool(rng.random() < 0.5)
        slots = np.arange(n) if rng.random() < 0.5 else np.sort(rng.choice(self.slots, n, replace=False))
        shape = rng.integers(3) if N > 1 else 0  # all loop 1 / all one later loop / mixed
        if shape == 0:
            loops = np.ones(n, dtype=np.int64)
        elif shape == 1:
            loops = np.full(n, rng.integers(2, N + 1), dtype=np.int64)
        else:
            loops = rng.integers(1, N + 1, size=n)
        p_exit_early = float(rng.choice([0.0, 0.45])) if N > 1 else 0.0
        leaving = (loops == N) | ((loops < N) & (rng.random(n) < p_exit_early))
        n_pre = int(rng.choice(PREFILL_CHOICES)) if rng.random() < 0.15 else 0
        n_pre = min(n_pre, int((loops == 1).sum()))
        reqs = rng.choice(self.n_req, n, replace=False)
        pos = rng.integers(0, MAX_GEN, size=n)
        first = np.flatnonzero(loops == 1)[:n_pre]
        pos[first] = 0  # admitted requests run their first token in the step they are prefilled in
        admitted = reqs[first]
        P = self.prompt_len[reqs]
        # validity of earlier positions at each loop (kv_policy=ignore: exited tokens left no deeper KV)
        kv_rows = 1 if self.kv_policy == "share" else N
        valid = []
        ctx = np.zeros(n, dtype=np.int64)
        for i in range(n):
            early = p_exit_early and self.kv_policy == "ignore"  # propagate fills what exits skip
            ex = np.where(rng.random(pos[i]) < p_exit_early, 1, N) if early else np.full(pos[i], N)
            rows = np.stack([ex >= k for k in range(1, kv_rows + 1)]) if kv_rows > 1 else np.ones((1, pos[i]), bool)
            valid.append(rows)
            filled = int(rows[loops[i] - 1].sum()) if self.kv_policy == "ignore" else int(pos[i])
            ctx[i] = P[i] + 1 + filled
        full = P + 1 + pos
        enter = loops == 1
        coda = np.ones(n, dtype=bool) if checks else leaving  # an exit check runs the coda too
        # kv_policy=propagate: an early exit projects K/V for every skipped loop's layers (the
        # runner does it for tokens with a successor, which every grid token has: pos < MAX_GEN)
        proj = int((N - loops[leaving & (loops < N)]).sum()) * self.layout["layers_per_block"] \
            if self.kv_policy == "propagate" else 0
        load = StepLoad(tokens=n, distinct_loops=int(np.unique(loops).size), context=int(ctx.sum()),
                        entering=int(enter.sum()), entering_context=int(full[enter].sum()) if self.edge else 0,
                        exiting=int(coda.sum()), exiting_context=int(full[coda].sum()) if self.edge else 0,
                        heads=int(coda.sum()), kv_proj_layers=proj,
                        prefill=[int(self.prompt_len[r]) for r in admitted])
        batch = StepBatch(slots=slots, requests=reqs, positions=pos, loops=loops, leaving=leaving,
                          admitted=admitted.astype(np.int64))
        return load, batch, checks, valid


class StepProfiler:
    """The grid's steps and their timings, measured pass by pass: `traces.validate` spreads
    the passes between its real runs, so that profile and runs see the same machine."""

    def __init__(self, packed, layout: dict, kv_policy: str, points: int, seed: int):
        from .serving.clock import RealSteps, warm_up

        slots = max(TOKEN_CHOICES)
        grid = Grid(layout, kv_policy, slots, seed)
        seqs = grid.sequences(packed.dims.vocab)
        self.clocks = {c: RealSteps(packed, slots, grid.prompt_len, seqs, kv_policy, checks_every_loop=c)
                       for c in (False, True)}
        self.pts = [grid.point() for _ in range(points)]
        self.order_rng = np.random.default_rng(seed + 1)
        self.passes: list[np.ndarray] = []
        self.seconds = 0.0
        warm_up(packed, kv_policy, True)

    def run_pass(self) -> None:
        t0 = time.perf_counter()
        times = np.zeros(len(self.pts))
        for i in self.order_rng.permutation(len(self.pts)):
            load, batch, checks, valid = self.pts[i]
            rs = self.clocks[checks]
            for s, req, p, v in zip(batch.slots, batch.requests, batch.positions, valid):
                rs.set_context(int(s), int(p), int(req), v)
            times[i] = rs.step_seconds(load, batch)
        self.passes.append(times)
        self.seconds += time.perf_counter() - t0
        print(f"  profile pass {len(self.passes)}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    def result(self) -> tuple[list[list[float]], dict]:
        """Rows of LOAD_COLUMNS + seconds. The mean over passes, not the median: a run's makespan
        is a sum of steps, and the expected sum is the sum of expected (mean) step times; a
        median under-predicts it whenever step times are skewed to the slow side, as they are
        on a shared machine."""
        from sim.cost_profiled import load_row

        times = np.stack(self.passes)
        mean = times.mean(axis=0)
        rows = [list(load_row(self.pts[i][0])) + [float(mean[i])] for i in range(len(self.pts))]
        spread = np.median((times.max(0) - times.min(0)) / mean)
        return rows, {"points": len(self.pts), "reps": len(self.passes), "median_rep_spread": float(spread),
                      "step_timer": self.clocks[True].timer, "seconds": self.seconds}


def profile(packed, layout: dict, kv_policy: str, points: int, reps: int, seed: int) -> tuple[list[list[float]], dict]:
    """Measure `points` grid steps in `reps` shuffled passes, back to back."""
    prof = StepProfiler(packed, layout, kv_policy, points, seed)
    for _ in range(reps):
        prof.run_pass()
    return prof.result()


def build_packed(cfg, device: str, dtype_name: str, checkpoint: str | None = None, source: str = "gguf"):
    import torch

    from .serving.weights import PackedModel
    from .serving.inputs import serving_model

    model, tok = serving_model(cfg.model, checkpoint, source)
    packed = PackedModel(model, getattr(torch, dtype_name), device)
    layout = packed.layout()
    want = {k: getattr(cfg.model, k) for k in layout}
    if layout != want:
        raise RuntimeError(f"packed model layout {layout} differs from the config's {want}")
    return packed, tok


def run_profile(cfg, packed, out: Path, points: int, reps: int, seed: int, command: str, placement: dict,
                paused: bool, measured: "StepProfiler | None" = None, runs=None) -> dict:
    """Profile (or take the passes `measured` already holds), add the steps of profiling
    runs (`runs`: traces.validate.RunProfiler) if any, fit, write the profile file."""
    import torch

    from sim.trace_io import git_commit

    if measured is not None:
        rows, stats = measured.result()
    else:
        rows, stats = profile(packed, packed.layout(), cfg.exit.kv_policy, points, reps, seed)
    if runs is not None and runs.rows:
        rows = rows + runs.rows
        stats = {**stats, "run_steps": len(runs.rows), "run_passes": runs.passes,
                 "run_points": [f"{s} b={b}" for s, b in runs.points], "seconds": stats["seconds"] + runs.seconds}
    data = np.asarray(rows)
    cols = {c: data[:, i] for i, c in enumerate(LOAD_COLUMNS)}
    report = fit_report(cols, data[:, -1])
    coef = fit(cols, data[:, -1])
    meta = {
        "device": device_name(str(packed.device)), "device_kind": packed.device.type,
        "dtype": str(packed.dtype).replace("torch.", ""), "torch": torch.__version__, **placement,
        "background_paused": paused, "commit": git_commit(), "command": command,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": cfg.model.name, "layout": packed.layout(), "kv_policy": cfg.exit.kv_policy,
        "weights": "SVD conversion of the base model (costs what an uptrained model costs)",
        "seed": seed, **stats, "fit": {**report, "coefficients": dict(zip(feature_names(), coef.tolist()))},
        "roofline": machine_peaks(str(packed.device), packed.dtype, stats.get("step_timer", "wall")),
    }
    prof = {"format": PROFILE_FORMAT, "metadata": meta, "columns": list(LOAD_COLUMNS) + ["seconds"],
            "samples": [[int(v) for v in r[:-1]] + [round(r[-1], 7)] for r in rows]}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, lambda p: Path(p).write_text(json.dumps(prof, indent=None, separators=(",", ":")) + "\n"))
    return meta


def parser():
    """The command line: plain options only (the traces commands' conventions: traces/cli.py)."""
    from sim.config import ModelConfig, bundled_options
    from sim.registry import discover_all, kv_registry

    from .cli import OneLineParser

    discover_all()
    ap = OneLineParser(prog="python -m traces.profile_steps",
                       description="Measure real engine steps over a grid of loads and write a step profile "
                                   "for cost=profiled.")
    ap.add_argument("--out", default=None, help="profile file to write (default runs/profiles/<device>_<model>.json; "
                                                "the bundled sim/profiles/ files only when named here)")
    ap.add_argument("--points", type=int, default=300, help="grid points")
    ap.add_argument("--reps", type=int, default=3, help="shuffled passes over the grid")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=ModelConfig().name, choices=bundled_options("model"),
                    help="bundled model layout to profile")
    ap.add_argument("--kv-policy", default="ignore", choices=kv_registry.names(), help="exit.kv_policy of the steps")
    ap.add_argument("--device", default="cpu")
    add_dtype_option(ap)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpus", default="0", help="CPUs to pin to, e.g. 0 or 0,1 ('' = no pinning)")
    ap.add_argument("--checkpoint", default=None, help="uptrained weights (default: the SVD conversion)")
    ap.add_argument("--no-pause", action="store_true", help="do not pause the background uptraining job")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from .cli import torch_missing
    if torch_missing("traces.profile_steps"):
        return 2
    from sim.config import load_config
    from sim.errors import ConfigError, UserError

    from .cli import check_device, fail
    from .execute import compose
    from .quiet import background_paused, pin

    args = parser().parse_args(argv)
    try:
        if args.points < 1 or args.reps < 1:
            raise ConfigError("--points and --reps must be >= 1")
        if args.checkpoint and not Path(args.checkpoint).is_file():
            raise ConfigError(f"--checkpoint {args.checkpoint}: no such file")
        check_device(args.device, f"--device {args.device}")
        cfg = load_config(compose([f"model={args.model}", f"exit.kv_policy={args.kv_policy}"]))
        args.dtype = dtype_from_args(args)
        out = Path(args.out) if args.out else default_profile_path(args.device, args.model)
        placement = pin(args.threads, [int(c) for c in args.cpus.split(",") if c.strip()] if args.cpus else None)
        packed, _ = build_packed(cfg, args.device, args.dtype, args.checkpoint)
        command = " ".join(["python -m traces.profile_steps"] + [shlex.quote(a) for a in argv])
        with background_paused(not args.no_pause) as paused:
            meta = run_profile(cfg, packed, out, args.points, args.reps, args.seed, command,
                               placement, paused is not None)
    except UserError as exc:
        return fail(exc)
    f = meta["fit"]
    print(f"{out}: {args.points} points x {args.reps} passes in {meta['seconds']:.0f} s; held-out fit error "
          f"mean {f['holdout_mean_abs_error']:.1%}, p90 {f['holdout_p90_abs_error']:.1%}, "
          f"max {f['holdout_max_abs_error']:.1%}, bias {f['holdout_bias']:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
