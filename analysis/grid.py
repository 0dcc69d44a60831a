"""Run a list of sweep points in-process and return them as a gathered sweep table.

`analysis.figures` needs dozens of simulations per figure; launching each through the
CLI would re-read and re-generate the trace every time (a paper-like trace takes
seconds to generate). Points are composed from `conf/` with Hydra's compose API, the
same overrides as on the command line, so a figure's point can be rerun as
`python -m sim.run <overrides>` and give the same numbers; workers cache traces.
The table has the layout of `analysis.gather`, so the same plotting code serves both.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
from joblib import Parallel, delayed
from tqdm import tqdm

from analysis.overrides import parse_point
from sim.api import compose
from sim.config import RunConfig
from sim.errors import UserError
from sim.simulation import load_run_trace, simulate
from sim.trace import Trace
from sim.trace_io import repo_relative

def compose_run(overrides: list[str]) -> RunConfig:
    """The typed config `python -m sim.run <overrides>` would run, without a progress bar."""
    return compose(["progress=false", *overrides])


_TRACES: dict[str, Trace] = {}  # per worker process; a few traces, each reused by many points


def _trace(cfg: RunConfig) -> Trace:
    key = repr((cfg.trace, cfg.seed if cfg.trace.synthetic is not None else None))
    if key not in _TRACES:
        if len(_TRACES) >= 3:
            _TRACES.pop(next(iter(_TRACES)))
        _TRACES[key] = load_run_trace(cfg)
    return _TRACES[key]


def _run(num: int, cfg: RunConfig) -> tuple[int, dict[str, Any]]:
    try:
        metrics = simulate(cfg, trace=_trace(cfg)).metrics
    except UserError as exc:  # a bad point is reported in the table, as in a sweep
        return num, {"status": "error", "error": str(exc)}
    metrics["trace_path"] = repo_relative(metrics.pop("trace", None))
    return num, {"status": "ok", **metrics}


def run_grid(points: list[list[str]], desc: str = "simulations", n_jobs: int | None = None) -> pd.DataFrame:
    """Simulate every point (a list of overrides) on all cores; one row per point with
    the overrides as typed columns and every metric. attrs["swept"]: the keys that vary."""
    configs = [compose_run(p) for p in points]
    n_jobs = n_jobs or os.cpu_count() or 1
    results: dict[int, dict[str, Any]] = {}
    # Slow points (small batches: many steps) first, so no worker idles at the end.
    order = sorted(range(len(points)), key=lambda i: configs[i].scheduler.batch_size)
    tasks = (delayed(_run)(i, configs[i]) for i in order)
    with Parallel(n_jobs=n_jobs, return_as="generator_unordered") as parallel:
        for num, row in tqdm(parallel(tasks), total=len(points), desc=desc, unit="run", leave=False):
            results[num] = row
    rows = []
    for num, overrides in enumerate(points):
        values = parse_point(overrides)
        rows.append({"job": num, "status": results[num]["status"], **values,
                     **{k: v for k, v in results[num].items() if k not in values and k != "status"}})
    frame = pd.DataFrame(rows)
    keys = list(dict.fromkeys(k for p in points for k in parse_point(p)))
    frame.attrs["swept"] = [k for k in keys if frame[k].nunique(dropna=False) > 1]
    return frame
