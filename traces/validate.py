"""`python -m traces.validate`: profile, run the validation grid for real, compare with
the simulator, write figures/data/sim_vs_real.csv and figures/sim_vs_real.{png,pdf}.

One command so the whole check reruns unchanged on a quiet machine:
  1. profile real steps into runs/profiles/<device>_<model>.json (--profile-out PATH:
     elsewhere, e.g. the bundled profile that `cost=profiled` reads by default; or
     reuse one: --profile PATH): grid points (traces.profile_steps) and
     the steps of real runs of every scheduler and batch size on trace requests the
     validation workloads never draw (RunProfiler), their passes spread before,
     between and after the real runs' repeats (a shared machine's load drifts:
     profile and runs must sample the same conditions);
  2. run the grid's schedulers (registered `validated=True`) at batch 8, 16 and 32 for real (traces.execute's
     engine + RealSteps) on workloads resampled from the default trace (at least
     --min-tokens generated tokens each), every point --reps times, repetitions
     interleaved so a noisy minute does not hit one point's repeats together;
  3. simulate each point with cost=profiled and with a roofline of this device
     (its measured matmul peak and copy bandwidth, from the profile), through the
     same Hydra composition as `python -m sim.run <overrides>`;
  4. write one CSV row per point (its `overrides` reproduce sim_makespan_s from a
     base install), the depth-wise speedups, the per-step log of the first
     repetition (measured vs predicted step time) and the figure.
The background uptraining job is paused for the whole run and resumed after.
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sim.cost.profiled import BUNDLED, LOAD_COLUMNS
from sim.registry import scheduler_registry
from sim.trace import DEFAULT_TRACE

from .precision import add_dtype_option, dtype_from_args


def grid_schedulers() -> tuple[str, ...]:
    """The schedulers of the validation grid: those registered with `validated=True`, whose
    real execution this command compares with the simulator."""
    return scheduler_registry.having("validated")


DESCRIPTION = ("Profile real steps, run the validation grid for real and compare it with the simulator; "
               "write figures/data/sim_vs_real.csv and figures/sim_vs_real.{png,pdf}.")


def default_trace() -> str:
    """The bundled default trace, named relative to the repository when run from there
    (the name goes into every row's overrides)."""
    from sim.trace_io import REPO, repo_relative

    return repo_relative(DEFAULT_TRACE) if Path.cwd().resolve() == REPO else str(DEFAULT_TRACE)


def sim_makespan(overrides: list[str]) -> dict:
    """What `python -m sim.run <overrides>` computes, in process."""
    from sim.simulation import simulate
    from sim.validate import load_config

    from .execute import compose

    cfg = load_config(compose(overrides))
    cfg.progress = False
    return simulate(cfg).metrics


def workload_size(batch: int, seed: int, min_tokens: int, base: list[str] = ()) -> int:
    """Fewest requests (at least 2 x batch, so the batch refills) whose resampled
    workload has at least min_tokens generated tokens."""
    n = 2 * batch
    while True:
        m = sim_makespan([*base, f"workload.num_requests={n}", f"seed={seed}", "cost=constant"])
        if m["num_tokens"] >= min_tokens:
            return n
        n += 1


def used_requests(trace, sizes: dict[int, int], seed: int) -> np.ndarray:
    """Trace requests the validation workloads draw (their resampling is the simulator's)."""
    from sim.config import WorkloadConfig
    from sim.workload import build_workload

    picks = [build_workload(trace, trace.exit_loop, np.zeros(trace.num_tokens, bool), trace.num_loops,
                            WorkloadConfig(num_requests=n), seed).source for n in sizes.values()]
    return np.unique(np.concatenate(picks))


def held_out(trace, used: np.ndarray):
    """The trace without the requests `used`: what profiling runs may draw from."""
    from dataclasses import replace

    from sim.workload import _token_index

    keep = np.setdiff1d(np.arange(trace.num_requests), used)
    tok = _token_index(trace.offsets, trace.gen_len, keep)
    per_tok = {k: getattr(trace, k)[tok] for k in ("conf", "correct") if getattr(trace, k) is not None}
    return replace(trace, request_id=trace.request_id[keep], prompt_len=trace.prompt_len[keep],
                   gen_len=trace.gen_len[keep], exit_loop=trace.exit_loop[tok], **per_tok)


class RunProfiler:
    """Profile steps as real runs make them: the four schedulers at each batch size on
    workloads of trace requests the validation never uses (one batch of requests each),
    every step's load and measured time kept. Grid points cover the load space; these
    cover the step sequences runs really produce (resumed hidden states, KV holes left
    by real exits, scattered slots), which a grid drawn independently per step misses."""

    def __init__(self, packed, tok, trace, schedulers, batches, seed: int):
        self.packed, self.tok, self.trace = packed, tok, trace
        self.points = [(s, b) for b in batches for s in schedulers]
        self.seed = seed
        self.rows: list[list[float]] = []
        self.passes = 0
        self.seconds = 0.0

    def run_pass(self) -> None:
        from sim.cost.profiled import LOAD_COLUMNS
        from sim.validate import load_config

        from .execute import compose, run_real

        t0 = time.perf_counter()
        for s, b in self.points:
            cfg = load_config(compose([f"scheduler={s}", f"scheduler.batch_size={b}",
                                       f"workload.num_requests={b}", f"seed={self.seed + self.passes}"]))
            cfg.progress = False
            res = run_real(cfg, self.packed, self.tok, warm=False, trace=self.trace)
            self.rows += res.steps[list(LOAD_COLUMNS) + ["seconds"]].to_numpy(float).tolist()
        self.passes += 1
        self.seconds += time.perf_counter() - t0
        print(f"  profile runs pass {self.passes}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def spread(passes: int, slots: int) -> list[int]:
    """How many of `passes` fall in each of `slots` gaps, evenly spread."""
    return [sum(1 for p in range(passes) if p * slots // passes == k) for k in range(slots)]


def speedups(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for b, g in table.groupby("batch_size"):
        t = g.set_index("scheduler")
        for base in [b for b in grid_schedulers() if b != "depthwise" and b in t.index and "depthwise" in t.index]:
            rows.append({"batch_size": b, "over": base,
                         "real": t.real_makespan_s[base] / t.real_makespan_s["depthwise"],
                         "profiled": t.sim_makespan_s[base] / t.sim_makespan_s["depthwise"],
                         "roofline": t.roofline_makespan_s[base] / t.roofline_makespan_s["depthwise"]})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, sp: pd.DataFrame) -> str:
    """The two tables docs/validation.md quotes, from the CSVs (so no number in them is typed by hand)."""
    pct = lambda v: f"{v:+.1%}"  # noqa: E731
    lines = ["| scheduler | batch | real (s) | spread | cost=profiled (s) | error | roofline (s) | roofline error |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.scheduler} | {r.batch_size} | {r.real_makespan_s:.1f} | {r.real_spread:.1%} | "
                     f"{r.sim_makespan_s:.1f} | {pct(r.error)} | {r.roofline_makespan_s:.1f} | {pct(r.roofline_error)} |")
    lines += ["", "| batch | over | real | cost=profiled | roofline |", "|---|---|---|---|---|"]
    for r in sp.itertuples():
        lines.append(f"| {r.batch_size} | {r.over} | {r.real:.2f}x | {r.profiled:.2f}x | {r.roofline:.2f}x |")
    err = table.error.abs()
    lines += ["", f"max |error| {err.max():.1%}, median {err.median():.1%}; roofline median "
                  f"{table.roofline_error.abs().median():.1%}, from {table.roofline_error.min():+.0%} to "
                  f"{table.roofline_error.max():+.0%}; largest spread of repeats {table.real_spread.max():.0%}"]
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, steps: pd.DataFrame, stem: Path) -> list[Path]:
    from analysis.style import plt, save, scheduler_color, scheduler_label

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1.6, 1]})
    batches = sorted(table.batch_size.unique())
    schedulers = [s for s in scheduler_registry.names() if s in set(table.scheduler)]
    width = 0.8 / len(schedulers)
    for i, s in enumerate(schedulers):
        g = table[table.scheduler == s].set_index("batch_size").reindex(batches)
        x = np.arange(len(batches)) + (i - (len(schedulers) - 1) / 2) * width
        lo = g.real_makespan_s - g.real_min_s
        hi = g.real_max_s - g.real_makespan_s
        ax.bar(x, g.real_makespan_s, width * 0.9, color=scheduler_color(s), alpha=0.55,
               yerr=[lo, hi], capsize=2, label=f"{scheduler_label(s)}: real")
        ax.scatter(x, g.sim_makespan_s, marker="o", color=scheduler_color(s), edgecolor="black", zorder=3, s=22)
        ax.scatter(x, g.roofline_makespan_s, marker="x", color="black", zorder=3, s=18)
    ax.scatter([], [], marker="o", color="white", edgecolor="black", label="simulated, cost=profiled")
    ax.scatter([], [], marker="x", color="black", label="simulated, roofline (this CPU)")
    ax.set_xticks(np.arange(len(batches)), [f"batch {b}" for b in batches])
    ax.set_ylabel("makespan (s)")
    ax.set_ylim(0, float(table.real_max_s.max()) * 1.45)  # room for the legend
    ax.set_title("Makespan: real (bars, min-max of repeats) vs simulated")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    for s in schedulers:
        g = steps[steps.scheduler == s]
        ax2.scatter(g.seconds * 1e3, g.predicted_s * 1e3, s=3, alpha=0.35, color=scheduler_color(s),
                    label=scheduler_label(s))
    lim = [max(1.0, steps.seconds.min() * 1e3 * 0.8), steps.seconds.max() * 1e3 * 1.2]
    ax2.plot(lim, lim, color="black", lw=0.8)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("measured step time (ms)")
    ax2.set_ylabel("cost=profiled step time (ms)")
    ax2.set_title("Per step (first repeat of every point)")
    ax2.legend(fontsize=7, markerscale=3)
    fig.tight_layout()
    paths = save(fig, stem)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    from .cli import run_options_command
    return run_options_command("traces.validate", parser(), _run, sys.argv[1:] if argv is None else argv)


def parser():
    """The command line: plain options only (the traces commands' conventions: traces/cli.py)."""
    from .cli import OneLineParser

    ap = OneLineParser(prog="python -m traces.validate", description=DESCRIPTION)
    ap.add_argument("--profile", default=None, help="reuse this profile instead of measuring one")
    ap.add_argument("--profile-out", default=None,
                    help="where the new profile goes (default runs/profiles/<device>_<model>.json; a bundled "
                         "sim/profiles/ file only when named here)")
    ap.add_argument("--points", type=int, default=300, help="profile grid points")
    ap.add_argument("--profile-reps", type=int, default=3, help="shuffled passes over the profile grid")
    ap.add_argument("--profile-runs", type=int, default=2,
                    help="passes of profiling runs on held-out trace requests (0: grid only)")
    ap.add_argument("--reps", type=int, default=3, help="real runs per validation point")
    ap.add_argument("--trace", default=default_trace(),
                    help="trace the workloads are drawn from (default: the bundled default trace)")
    ap.add_argument("--batches", default="8,16,32", help="batch sizes, comma-separated")
    ap.add_argument("--schedulers", default=",".join(grid_schedulers()), help="schedulers, comma-separated")
    ap.add_argument("--min-tokens", type=int, default=2000, help="generated tokens per workload at least")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    add_dtype_option(ap)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpus", default="0", help="CPUs to pin to, e.g. 0 or 0,1 ('' = no pinning)")
    ap.add_argument("--csv", default="figures/data/sim_vs_real.csv", help="the table (other files go beside it)")
    ap.add_argument("--figure", default="figures/sim_vs_real", help="the figure, without suffix")
    ap.add_argument("--no-pause", action="store_true", help="do not pause the background uptraining job")
    ap.add_argument("--tables", action="store_true", help="only rewrite sim_vs_real.md from the CSVs")
    return ap


def check_args(args) -> tuple[list[int], list[str]]:
    """The batch sizes and schedulers, every input checked before a model loads."""
    from sim.errors import ConfigError
    from sim.registry import discover_all, scheduler_registry

    from .cli import check_device

    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        raise ConfigError(f"--batches {args.batches}: give integers, e.g. 8,16,32") from None
    discover_all()
    schedulers = args.schedulers.split(",")
    for s in schedulers:
        if s not in scheduler_registry.names():
            raise ConfigError(f"--schedulers: {s!r} is not known; valid: {', '.join(scheduler_registry.names())}")
    if not Path(args.trace).is_file():
        raise ConfigError(f"--trace {args.trace}: no such file")
    if args.profile is not None:
        from sim.cost.profiled import read_profile
        read_profile(args.profile)
    check_device(args.device, f"--device {args.device}")
    return batches, schedulers


def _run(args, argv: list[str]) -> int:
    from sim.cost.profiled import ProfiledCost, read_profile
    from sim.simulation import load_run_trace
    from sim.trace_io import repo_relative
    from sim.validate import load_config

    from .execute import compose, run_real
    from .profile_steps import StepProfiler, build_packed, default_profile_path, run_profile
    from .quiet import background_paused, pin

    if args.tables:
        csv = Path(args.csv)
        csv.with_name("sim_vs_real.md").write_text(
            markdown(pd.read_csv(csv), pd.read_csv(csv.with_name("sim_vs_real_speedups.csv"))))
        return 0
    batches, schedulers = check_args(args)
    t_start = time.perf_counter()
    placement = pin(args.threads, [int(c) for c in args.cpus.split(",") if c.strip()] if args.cpus else None)
    # the trace is named in every row's overrides, so that they keep reproducing the row
    # when the bundled default trace is re-recorded
    base_ov = [f"trace.path={args.trace}"]
    base_cfg = load_config(compose(base_ov))
    packed, tok = build_packed(base_cfg, args.device, dtype_from_args(args))
    command = " ".join(["python -m traces.validate"] + [shlex.quote(a) for a in argv])
    sizes = {b: workload_size(b, args.seed, args.min_tokens, base_ov) for b in batches}
    runs: dict[tuple, list] = {}
    step_logs = []
    with background_paused(not args.no_pause) as paused:
        # profile passes spread over the real runs (before, between and after the repeats), so
        # that on a shared machine the profile and the runs see the same conditions
        profiler = run_profiler = None
        if args.profile is None:
            profiler = StepProfiler(packed, packed.layout(), base_cfg.exit.kv_policy, args.points, args.seed)
            if args.profile_runs:
                trace = load_run_trace(base_cfg)
                run_profiler = RunProfiler(packed, tok, held_out(trace, used_requests(trace, sizes, args.seed)),
                                           schedulers, batches, args.seed + 1000)
        slots = args.reps + 1
        due = spread(args.profile_reps, slots)
        due_runs = spread(args.profile_runs, slots)

        def profile_passes(k: int) -> None:
            for _ in range(due[k] if profiler is not None else 0):
                profiler.run_pass()
            for _ in range(due_runs[k] if run_profiler is not None else 0):
                run_profiler.run_pass()

        for rep in range(args.reps):
            profile_passes(rep)
            for b in batches:
                for s in schedulers:
                    ov = [*base_ov, f"scheduler={s}", f"scheduler.batch_size={b}", f"workload.num_requests={sizes[b]}",
                          f"seed={args.seed}"]
                    cfg = load_config(compose(ov))
                    cfg.progress = False
                    res = run_real(cfg, packed, tok, warm=rep == 0 and s == schedulers[0])
                    runs.setdefault((s, b), []).append(res.metrics)
                    if rep == 0:
                        step_logs.append(res.steps.assign(scheduler=s, batch_size=b))
                    print(f"  rep {rep + 1} {s:>10} b={b:<3} real {res.metrics['makespan_s']:7.2f} s "
                          f"({time.perf_counter() - t_start:.0f} s so far)", file=sys.stderr)
        profile_passes(args.reps)
        if profiler is not None:
            profile_path = Path(args.profile_out or default_profile_path(args.device, base_cfg.model.name))
            run_profile(base_cfg, packed, profile_path, args.points, args.profile_reps, args.seed,
                        command, placement, paused is not None, measured=profiler, runs=run_profiler)
        else:
            profile_path = Path(args.profile)
    bundled = profile_path.resolve() == BUNDLED.resolve()
    prof_meta = read_profile(profile_path)["metadata"]
    peaks = prof_meta["roofline"]
    rows = []
    for (s, b), ms in runs.items():
        ov = [*base_ov, f"scheduler={s}", f"scheduler.batch_size={b}", f"workload.num_requests={sizes[b]}",
              f"seed={args.seed}"]
        prof_ov = ov + ["cost=profiled"] + ([] if bundled else [f"cost.profile={profile_path}"])
        roof_ov = ov + ["cost=roofline", "hardware.name=this_cpu",
                        f"hardware.bandwidth_gb_s={peaks['bandwidth_gb_s']:.3f}",
                        f"hardware.peak_tflops={peaks['peak_tflops']:.5f}"]
        sim = sim_makespan(prof_ov)
        roof = sim_makespan(roof_ov)
        real = np.array([m["makespan_s"] for m in ms])
        med = float(np.median(real))
        rows.append({"scheduler": s, "batch_size": b, "num_requests": sizes[b], "num_tokens": ms[0]["num_tokens"],
                     "overrides": " ".join(prof_ov), "roofline_overrides": " ".join(roof_ov),
                     "real_makespan_s": med, "real_min_s": float(real.min()), "real_max_s": float(real.max()),
                     "real_reps": ";".join(f"{x:.3f}" for x in real), "real_spread": float(real.max() / real.min() - 1),
                     "real_wall_makespan_s": float(np.median([m["wall_steps_s"] for m in ms])),
                     "step_timer": ms[0]["step_timer"], "sim_makespan_s": sim["makespan_s"],
                     "roofline_makespan_s": roof["makespan_s"],
                     "error": sim["makespan_s"] / med - 1, "roofline_error": roof["makespan_s"] / med - 1,
                     "loop_steps": ms[0]["loop_steps"], "real_throughput_tok_s": ms[0]["num_tokens"] / med,
                     "sim_throughput_tok_s": sim["throughput_tok_s"]})
    table = pd.DataFrame(rows).sort_values(["batch_size", "scheduler"],
                                           key=lambda c: c.map({s: i for i, s in enumerate(scheduler_registry.names())})
                                           if c.name == "scheduler" else c)
    csv = Path(args.csv)
    csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv, index=False, float_format="%.6g")
    sp = speedups(table)
    sp.to_csv(csv.with_name("sim_vs_real_speedups.csv"), index=False, float_format="%.4g")
    csv.with_name("sim_vs_real.md").write_text(markdown(table, sp))
    cost = ProfiledCost(load_config(compose(["cost=profiled", f"cost.profile={profile_path}"])).cost, None, base_cfg.model)
    steps = pd.concat(step_logs, ignore_index=True)
    steps["predicted_s"] = cost.predict({c: steps[c].to_numpy() for c in LOAD_COLUMNS})
    steps.to_parquet(csv.with_name("sim_vs_real_steps.parquet"), index=False, compression="zstd")
    plot(table, steps, Path(args.figure))
    step_err = steps.predicted_s / steps.seconds - 1
    summary = {
        "command": command, "profile": repo_relative(profile_path), "seconds": time.perf_counter() - t_start,
        "points": len(table), "max_abs_error": float(table.error.abs().max()),
        "median_abs_error": float(table.error.abs().median()),
        "roofline_median_abs_error": float(table.roofline_error.abs().median()),
        "max_real_spread": float(table.real_spread.max()), "step_median_abs_error": float(step_err.abs().median()),
        "profile_fit": prof_meta["fit"], **placement, "background_paused": paused is not None,
    }
    csv.with_name("sim_vs_real_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    cols = ["scheduler", "batch_size", "real_makespan_s", "real_spread", "sim_makespan_s", "error",
            "roofline_makespan_s", "roofline_error"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(sp.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"max |error| {summary['max_abs_error']:.1%}, median {summary['median_abs_error']:.1%} "
          f"(roofline median {summary['roofline_median_abs_error']:.1%}); {summary['seconds']:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
