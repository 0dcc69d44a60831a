"""Simulator speed: simulated generated tokens per wall-clock second, and peak memory.

Every point runs in its own process (so peak RSS is that run's own, and the wall
time is the whole process: interpreter start, imports, trace load, simulation),
next to a bare SimPy loop of 10^6 timeouts timed the same way in the same run, so
each figure can be read as a ratio to it: machines are noisy, ratios less so.

    python -m benchmarks.sim_speed                       # full grid (slow: 10^7 tokens)
    python -m benchmarks.sim_speed --tokens 1e5 1e6 --batches 64
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import pandas as pd


def bare_simpy(n: int) -> dict:
    import simpy

    env = simpy.Environment()

    def loop():
        for _ in range(n):
            yield env.timeout(1.0)

    env.process(loop())
    env.run()
    return {}


def one_point(scheduler: str, batch: int, tokens: int) -> dict:
    from sim.config import RunConfig
    from sim.simulation import simulate
    from sim.trace import load_trace
    from sim.validate import validate

    trace = load_trace()
    cfg = RunConfig()
    cfg.progress = False
    cfg.scheduler.name, cfg.scheduler.batch_size = scheduler, batch
    cfg.workload.num_requests = max(1, round(tokens * trace.gen_len.size / trace.num_tokens))
    validate(cfg)
    t0 = time.perf_counter()
    metrics = simulate(cfg, trace=trace).metrics
    return {"sim_s": time.perf_counter() - t0, "num_tokens": metrics["num_tokens"],
            "loop_steps": metrics["loop_steps"]}


def child(argv: list[str]) -> dict:
    """Run one point in a fresh interpreter; wall time covers the whole process."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "benchmarks.sim_speed", "--child", *argv],
                         capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from sim.registry import scheduler_registry

    names = list(scheduler_registry.names())
    parser.add_argument("--schedulers", nargs="+", choices=names, default=names)
    parser.add_argument("--batches", nargs="+", type=int, default=[8, 64, 256])
    parser.add_argument("--tokens", nargs="+", type=float, default=[1e5, 1e6, 1e7])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = bare_simpy(int(rest[0])) if kind == "bare" else one_point(kind, int(rest[0]), int(float(rest[1])))
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    bare = child(["bare", str(10**6)])
    print(f"bare SimPy loop, 10^6 timeouts: {bare['wall_s']:.2f} s for the whole process", flush=True)
    rows = []
    for tokens in args.tokens:
        for batch in args.batches:
            for sched in args.schedulers:
                r = child([sched, str(batch), str(tokens)])
                rows.append({"scheduler": sched, "batch": batch, "tokens": r["num_tokens"],
                             "wall_s": r["wall_s"], "sim_s": r["sim_s"], "loop_steps": r["loop_steps"],
                             "tok_per_s": r["num_tokens"] / r["wall_s"],
                             "us_per_token": 1e6 * r["wall_s"] / r["num_tokens"],
                             "x_bare_simpy": r["wall_s"] / bare["wall_s"], "peak_rss_mb": r["peak_rss_mb"]})
                print(f"  {sched:>10} batch {batch:>4} {r['num_tokens']:>10,} tok: {r['wall_s']:7.2f} s", flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.to_markdown(index=False, floatfmt=".3g") if _has_tabulate() else table.to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
