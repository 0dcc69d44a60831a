"""Files rrtsim writes, written one way: atomically, and traces with their metadata.

Everything that leaves a result on disk (a run's metrics, a recorded or synthetic
trace, a checkpoint) goes through `write_atomic`, so a killed process never leaves a
file that looks finished. Traces are Parquet with `num_loops`, the model layout and
provenance (commit, command, date) in the key-value metadata; `provenance` and
`git_commit` build that record the same way for `sim.synthetic` and `traces.record`.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]


def repo_relative(path: str | Path | None) -> str | None:
    """A path as stored in committed tables: relative to the repository (for bundled data
    in an installed package, its name under the package root, e.g. traces/data/x.parquet)
    when it lies inside it, else as given: a table regenerated on another machine then
    differs only where its numbers do."""
    if path is None:
        return None
    p = Path(path)
    if p.is_absolute() and p.resolve().is_relative_to(REPO):
        return p.resolve().relative_to(REPO).as_posix()
    return str(path)


def write_atomic(path: str | Path, write: Callable[[str], None]) -> None:
    """Write via a temporary file in the same directory, then rename: all or nothing."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make results unreadable to others
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def git_commit(cwd: str | Path = REPO) -> str:
    """HEAD of the repository the code runs from ("unknown" outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=cwd, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance(argv: list[str], **extra: Any) -> dict[str, str]:
    """What made a file: `commit`, `command` (quoted `argv`), `date` (UTC), and `extra`."""
    return {"commit": git_commit(), "command": " ".join(shlex.quote(a) for a in argv),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **{k: str(v) for k, v in extra.items()}}


def _encoded(meta: Mapping[str, Any]) -> dict[bytes, bytes]:
    return {str(k).encode(): str(v).encode() for k, v in meta.items()}


def write_trace_parquet(frame: pd.DataFrame, path: str | Path, metadata: Mapping[str, Any]) -> None:
    """A trace table as zstd Parquet with `metadata` in the key-value metadata, atomically."""
    path = Path(path)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **_encoded(metadata)})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def read_trace_metadata(path: str | Path) -> dict[str, str]:
    """A Parquet trace's key-value metadata (pandas' own key left out), without reading its
    rows; {} for a CSV or a file that is not Parquet (loading it reports the problem)."""
    path = Path(path)
    if path.suffix.lower() == ".csv" or not path.is_file():
        return {}
    try:
        raw = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError, ValueError):
        return {}
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()
            if not k.startswith(b"pandas")}


def update_trace_metadata(path: str | Path, updates: Mapping[str, Any]) -> None:
    """Add or replace metadata keys of a Parquet trace, rows unchanged, atomically."""
    path = Path(path)
    table = pq.read_table(path)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **_encoded(updates)})
    write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
