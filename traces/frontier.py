"""`python -m traces.frontier --checkpoint CKPT`: the exit frontier for real (issue 26):
free-running confidence exits at several thresholds under every KV policy the executor runs,
timed against continuous batching and scored against its full-depth output, each point
beside the simulator's prediction. Writes figures/data/exit_frontier.csv and
figures/exit_frontier.{png,pdf} (analysis.exit_frontier redraws them without torch).

One command so the whole measurement reruns unchanged on a quiet machine:
  1. every point (analysis.exit_frontier.grid: continuous, depthwise_spec when the simulator
     has it, oracle depth-wise, and depth-wise exit=live at each threshold x KV policy) runs
     `traces.execute`'s run_real on one packed model, free-running except the oracle
     (teacher-forced: its exits are the trace's), --reps times, repetitions interleaved so
     that a noisy minute does not hit one point's repeats together; the background
     uptraining job is paused and the process pinned for the whole timing;
  2. each point's first repetition is written to <out>/<point>/ as traces.execute writes a
     run (config.yaml, metrics.json, generated.parquet), and later repetitions are checked
     to emit the same text;
  3. traces.quality scores every free-running point against continuous at the same batch
     (the original model's log-likelihood, after the timing: it is not timed);
  4. analysis.exit_frontier.collect simulates each point with cost=profiled (exit=confidence
     for live exits) and writes one CSV row per point, then the figure.
"""
from __future__ import annotations

import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path

import pandas as pd

from .precision import add_dtype_option, dtype_from_args

ROOT = Path(__file__).resolve().parent.parent


def bundled_profile_for(cpu: str) -> str | None:
    """The bundled cost=profiled profile measured on this CPU model (its metadata names the
    device), so the simulator prices the points on the machine that ran them; None if none."""
    for path in sorted((ROOT / "sim" / "profiles").glob("*.json")):
        device = json.loads(path.read_text()).get("metadata", {}).get("device", "")
        if device and cpu.startswith(device.split("(")[0].strip()):
            return str(path.relative_to(ROOT))
    return None


def run_folder(out: Path, raw, metrics: dict, res) -> None:
    """A point's first repetition, laid out as `traces.execute --out` lays out a run."""
    from sim.run import write_atomic, write_outputs

    write_outputs(out, raw, metrics, res.requests)
    write_atomic(out / "generated.parquet", lambda p: generated_frame(res).to_parquet(p, index=False))


def generated_frame(res) -> pd.DataFrame:
    """(request_id, position, token) of every emitted token of a free-running run."""
    return res.generated.sort_values(["request_id", "position"], ignore_index=True)


def execute(points, base: list[str], reps: int, packed, tok, out: Path, log=print) -> tuple[dict, dict]:
    """Run every point `reps` times, interleaved; returns ({key: [metrics per rep]},
    {key: whether every repeat emitted the first one's tokens})."""
    from sim.validate import load_config

    from .execute import compose, run_real

    real: dict[str, list[dict]] = {}
    stable: dict[str, bool] = {}
    first_tokens: dict[str, pd.DataFrame] = {}
    t0 = time.perf_counter()
    for rep in range(reps):
        for i, p in enumerate(points):
            raw = compose(p.run_overrides(base))
            cfg = load_config(raw)
            cfg.progress = False
            res = run_real(cfg, packed, tok, warm=rep == 0 and i == 0, free_running=p.free_running)
            real.setdefault(p.key, []).append(res.metrics)
            if p.free_running:
                gen = generated_frame(res)
                if rep == 0:
                    first_tokens[p.key] = gen
                    stable[p.key] = True
                else:
                    stable[p.key] &= gen.equals(first_tokens[p.key])
            if rep == 0:
                run_folder(out / p.key, raw, res.metrics, res) if p.free_running else \
                    _teacher_forced_folder(out / p.key, raw, res)
            log(f"  rep {rep + 1} {p.key:<28} real {res.metrics['makespan_s']:8.2f} s "
                f"({time.perf_counter() - t0:.0f} s so far)")
    return real, stable


def _teacher_forced_folder(out: Path, raw, res) -> None:
    from sim.run import write_outputs
    write_outputs(out, raw, res.metrics, res.requests)


def score(points, out: Path, source: str, batch: int, log=print) -> dict[str, dict]:
    """traces.quality's measures of every free-running point against continuous at its batch."""
    from analysis.exit_frontier import Point

    from .base_model import load_base
    from .quality import measure

    scorer = load_base(source)
    quality = {}
    for p in points:
        if not p.free_running:
            continue
        ref = out / Point("continuous", p.batch_size).key
        quality[p.key] = measure(out / p.key, ref, scorer=scorer, source=source, batch=batch)
        q = quality[p.key]
        log(f"  quality {p.key:<28} agreement {q['token_agreement']:.3f}, identical {q['identical_share']:.2f}, "
            f"log-lik {q['orig_loglik']:.3f} (full depth {q['ref_orig_loglik']:.3f})")
    return quality


def parser():
    """The command line: plain options only (the traces commands' conventions: traces/cli.py)."""
    from analysis.exit_frontier import CSV, FIGURE, REFERENCES

    from .cli import OneLineParser
    from .validate import default_trace

    ap = OneLineParser(prog="python -m traces.frontier", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="uptrained checkpoint (exit=live needs one)")
    ap.add_argument("--thresholds", default="0.5,0.7,0.8,0.9,0.95", help="exit.threshold values, comma-separated")
    ap.add_argument("--kv-policies", default="ignore,share,propagate,recompute",
                    help="comma-separated; those the executor does not run are left out, with a note")
    ap.add_argument("--batches", default="16", help="batch sizes, comma-separated")
    ap.add_argument("--references", default=",".join(REFERENCES),
                    help="reference points (continuous is required: the baseline and the quality reference)")
    ap.add_argument("--reps", type=int, default=3, help="real runs per point")
    ap.add_argument("--num-requests", type=int, default=32, help="requests per workload (resampled from the trace)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--trace", default=default_trace(),
                    help="trace the workload is drawn from (named in every row's overrides)")
    ap.add_argument("--overrides", default="", help="more sim.run overrides for every point (one quoted string)")
    ap.add_argument("--profile", default=None,
                    help="cost=profiled profile (default: the bundled one measured on this CPU model)")
    ap.add_argument("--source", default="gguf", help="base model, also the scorer (traces.base_model.load_base)")
    ap.add_argument("--score-batch", type=int, default=8, help="sequences per scoring forward")
    ap.add_argument("--device", default="cpu")
    add_dtype_option(ap)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpus", default="0", help="CPUs to pin to, e.g. 0 or 0,1 ('' = no pinning)")
    ap.add_argument("--out", default=None, help="run folders (default runs/frontier/<time>)")
    ap.add_argument("--csv", default=str(CSV.relative_to(ROOT)), help="the table")
    ap.add_argument("--figure", default=str(FIGURE.relative_to(ROOT)), help="the figure, without suffix")
    ap.add_argument("--no-pause", action="store_true", help="do not pause the background uptraining job")
    return ap


def plan(args) -> tuple[list, list[str]]:
    """(points, overrides every point shares), every input checked before a model loads."""
    from analysis.exit_frontier import grid
    from sim.errors import ConfigError
    from sim.registry import discover_all, scheduler_registry
    from sim.validate import load_config

    from .cli import check_device
    from .execute import compose
    from .serving.kv import real_kv_policies

    def numbers(text: str, kind, name: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--{name} {text!r}: not a comma-separated list of {kind.__name__}s") from None

    thresholds = numbers(args.thresholds, float, "thresholds")
    batches = numbers(args.batches, int, "batches")
    if not thresholds or not all(0 <= t <= 1 for t in thresholds):
        raise ConfigError(f"--thresholds {args.thresholds!r}: give values in [0, 1]")
    if not batches or min(batches) < 1 or args.reps < 1 or args.num_requests < 1 or args.score_batch < 1:
        raise ConfigError("--batches, --reps, --num-requests and --score-batch must be >= 1")
    for path, name in ((args.checkpoint, "--checkpoint"), (args.trace, "--trace"), (args.profile, "--profile")):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{name} {path}: no such file")
    check_device(args.device, f"--device {args.device}")
    wanted = [k for k in args.kv_policies.split(",") if k.strip()]
    kvs = [k for k in wanted if k in real_kv_policies()]
    if not kvs:
        raise ConfigError(f"none of --kv-policies {args.kv_policies!r} runs in the executor "
                          f"({', '.join(real_kv_policies())} do)")
    for k in [k for k in wanted if k not in kvs]:
        print(f"  note: KV policy {k} is not run by the executor: left out", file=sys.stderr)
    discover_all()
    refs = [r for r in args.references.split(",") if r.strip()]
    for r in [r for r in refs if r != "oracle" and r not in scheduler_registry]:
        print(f"  note: scheduler {r} is not registered: reference point left out", file=sys.stderr)
        refs.remove(r)
    if "continuous" not in refs:
        raise ConfigError("--references must include continuous (the speed baseline and quality reference)")
    base = [f"trace.path={args.trace}", f"workload.num_requests={args.num_requests}", f"seed={args.seed}",
            *shlex.split(args.overrides)]
    points = grid(thresholds, kvs, batches, refs)
    for p in points:  # every point composes before anything runs
        load_config(compose(p.run_overrides(base)))
    return points, base


def main(argv: list[str] | None = None) -> int:
    from .cli import run_options_command
    return run_options_command("traces.frontier", parser(), _run, sys.argv[1:] if argv is None else argv)


def _run(args, argv: list[str]) -> int:
    import torch

    from analysis.exit_frontier import collect, plot, write
    from sim.trace_io import git_commit
    from sim.validate import load_config

    from .execute import compose
    from .profile_steps import device_name
    from .quiet import background_paused, pin
    from .serving.inputs import serving_model
    from .serving.weights import PackedModel

    t_start = time.perf_counter()
    points, base = plan(args)
    placement = pin(args.threads, [int(c) for c in args.cpus.split(",") if c.strip()] if args.cpus else None)
    cpu = device_name(args.device)
    profile = args.profile or bundled_profile_for(cpu)
    cfg0 = load_config(compose(points[0].run_overrides(base)))
    model, tok = serving_model(cfg0.model, args.checkpoint, args.source)
    packed = PackedModel(model, getattr(torch, dtype_from_args(args)), args.device)
    del model
    out = Path(args.out or f"runs/frontier/{dt.datetime.now():%Y-%m-%d_%H-%M-%S}")
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    with background_paused(not args.no_pause) as paused:
        real, stable = execute(points, base, args.reps, packed, tok, out, log)
    del packed
    quality = score(points, out, args.source, args.score_batch, log)
    command = " ".join(["python -m traces.frontier"] + [shlex.quote(a) for a in argv])
    prov = {"cpu": cpu, "threads": placement["threads"], "cpus": placement["cpus"],
            "dtype": dtype_from_args(args), "checkpoint": args.checkpoint,
            "background_paused": paused is not None, "profile": profile or "bundled default",
            "commit": git_commit(), "command": command, "runs": str(out),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    table = collect(points, real, quality, base, profile, prov)
    # whether every repeat emitted the first one's text (None: teacher-forced, nothing generated)
    table["generated_stable"] = [stable.get(p.key) for p in points if p.key in real]
    csv = write(table, Path(args.csv))
    figs = plot(table, Path(args.figure))
    cols = ["policy", "threshold", "kv_policy", "batch_size", "real_makespan_s", "real_speedup", "sim_speedup",
            "token_agreement", "identical_share", "orig_loglik", "sim_accuracy_cost"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"  {csv}, {', '.join(map(str, figs))}; runs in {out}; {time.perf_counter() - t_start:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
