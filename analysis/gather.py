"""Gather a Hydra sweep directory into one table: one row per point the command asked for.

The expected points come from the sweep's own `multirun.yaml` (expanded as the basic
sweeper did), not from the job directories on disk, so a point that failed or was
killed before writing anything is still a row, with its status, instead of silently
missing from every plot and average built on the table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from analysis.overrides import expand, parse_point
from sim.trace_io import repo_relative, write_atomic

SWEEP_FILE = "sweep.parquet"
OK, ERROR, MISSING = "ok", "error", "missing"


def sweep_overrides(sweep_dir: Path) -> list[str]:
    """The task overrides of the sweep command, as Hydra saved them in multirun.yaml."""
    saved = sweep_dir / "multirun.yaml"
    if not saved.exists():
        raise FileNotFoundError(f"{sweep_dir}: no multirun.yaml, not a Hydra multirun directory")
    cfg = OmegaConf.load(saved)
    task = list(OmegaConf.to_container(cfg.hydra.overrides.task))
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    return [f"{k}={v}" for k, v in params.items()] + task


def _job_dir(sweep_dir: Path, num: int) -> Path | None:
    """Job dirs are named `<num>_<override_dirname>` (conf/config.yaml); the number alone
    identifies them. An override value with a slash (trace.path=dir/t.parquet) nests the
    job dir below that name, so the result files are looked for in the whole subtree."""
    tops = sorted(sweep_dir.glob(f"{num}_*")) + [p for p in [sweep_dir / str(num)] if p.is_dir()]
    for top in tops:
        for name in ("metrics.json", "error.txt"):
            found = sorted(top.rglob(name))
            if found:
                return found[0].parent
    return tops[0] if tops else None


def _point(num: int, job: list[str], job_dir: Path | None) -> dict[str, Any]:
    row: dict[str, Any] = {"job": num}
    metrics_file = job_dir / "metrics.json" if job_dir else None
    error_file = job_dir / "error.txt" if job_dir else None
    if metrics_file is not None and metrics_file.exists():
        metrics = json.loads(metrics_file.read_text())
        metrics["trace_path"] = repo_relative(metrics.pop("trace", None))  # `trace` is also a config group name
        row.update(status=OK, error=None)
    elif error_file is not None and error_file.exists():
        metrics = {}
        row.update(status=ERROR, error=error_file.read_text().strip().splitlines()[0])
    else:
        metrics = {}
        row.update(status=MISSING, error="no metrics.json: killed, still running or never started")
    overrides = parse_point(job)
    row.update(overrides)
    row.update({k: v for k, v in metrics.items() if k not in overrides})
    row["job_dir"] = str(job_dir) if job_dir else None
    return row


def gather(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per expected point: `job`, `status` (ok/error/missing), the overrides as
    typed columns (keys as on the command line), every metric, `error`, `job_dir`.
    `frame.attrs["swept"]` lists the swept keys."""
    sweep_dir = Path(sweep_dir)
    jobs, swept = expand(sweep_overrides(sweep_dir))
    frame = pd.DataFrame([_point(num, job, _job_dir(sweep_dir, num)) for num, job in enumerate(jobs)])
    frame.attrs["swept"] = swept
    return frame


def write_sweep(frame: pd.DataFrame, sweep_dir: str | Path) -> Path:
    path = Path(sweep_dir) / SWEEP_FILE
    write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))
    return path


def load_sweep(sweep_dir: str | Path) -> pd.DataFrame:
    """The gathered table of a sweep: its sweep.parquet, or gathered now if it has none
    yet (a sweep still running or killed before its end callback)."""
    path = Path(sweep_dir) / SWEEP_FILE
    if path.exists():
        return pd.read_parquet(path)
    return gather(sweep_dir)


def failure_report(frame: pd.DataFrame) -> str:
    """The console lines that say which points did not finish and why."""
    bad = frame[frame["status"] != OK]
    head = f"{len(frame) - len(bad)}/{len(frame)} points finished"
    if bad.empty:
        return head
    lines = [f"{head}; {len(bad)} FAILED:"]
    for row in bad.itertuples():
        where = row.job_dir or f"job {row.job} (no directory)"
        lines.append(f"  {where}: {row.status}: {row.error}")
    return "\n".join(lines)
