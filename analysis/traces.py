"""Exit traces as pandas tables, and the exit-policy trade-offs computed on them.

`sim.trace` keeps a trace as arrays for speed; analysis wants one tidy table it can
group by position, request or loop. The table is built from the validated `Trace`,
so a file that the simulator would refuse is refused here too, with the same message.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from sim.config import ExitConfig
from sim.exit import apply_exit_policy
from sim.exit.confidence import ConfidenceExitConfig
from sim.trace import DEFAULT_TRACE, Trace, load_trace
from sim.trace_io import REPO

RECORDED = REPO / "traces" / "data"


def trace_paths() -> list[Path]:
    """The bundled default trace, then every other recorded trace (traces/data/*.parquet),
    so figures pick up new recordings without being edited."""
    return [DEFAULT_TRACE, *(p for p in sorted(RECORDED.glob("*.parquet")) if p != DEFAULT_TRACE)]


def trace_name(trace: Trace) -> str:
    """A short label for legends and panel titles: the file name (a recording's card,
    beside it in traces/data/, says which model made it)."""
    return Path(trace.path).stem


def token_table(trace: Trace) -> pd.DataFrame:
    """One row per generated token: request_id, position, prompt_len, gen_len, exit_loop,
    conf_k and correct_k per loop (when the trace has them). attrs: num_loops, path, metadata."""
    n, offsets = trace.num_tokens, trace.offsets
    req_index = np.repeat(np.arange(trace.gen_len.size), trace.gen_len)
    frame = pd.DataFrame({
        "request_id": trace.request_id[req_index],
        "position": np.arange(n) - offsets[req_index],
        "prompt_len": trace.prompt_len[req_index],
        "gen_len": trace.gen_len[req_index],
        "exit_loop": trace.exit_loop.astype(np.int64),
    })
    for prefix, values in (("conf", trace.conf), ("correct", trace.correct)):
        if values is not None:
            for k in range(trace.num_loops):
                frame[f"{prefix}_{k + 1}"] = values[:, k]
    frame.attrs.update(num_loops=trace.num_loops, path=trace.path, metadata=dict(trace.metadata),
                       name=trace_name(trace))
    return frame


def _extra_columns(path: Path, known: pd.Index) -> pd.DataFrame | None:
    """Columns the simulator ignores but analysis wants (a recording's `token` ids, say),
    keyed by (request_id, position)."""
    names = pq.read_schema(path).names if path.suffix.lower() != ".csv" else pd.read_csv(path, nrows=0).columns
    extra = [c for c in names if c not in known and not c.startswith("__index")]
    if not extra:
        return None
    keys = ["request_id", "position"]
    cols = keys + extra
    raw = pd.read_csv(path, usecols=cols) if path.suffix.lower() == ".csv" else pd.read_parquet(path, columns=cols)
    return raw.astype({k: "int64" for k in keys})


def load_trace_frame(path: str | Path | None = None, num_loops: int | None = None) -> pd.DataFrame:
    """Load and validate a trace file (None: the bundled default) as a per-token table,
    sorted by request and position; columns beyond the trace schema are kept."""
    trace = load_trace(path, num_loops)
    frame = token_table(trace)
    extra = _extra_columns(Path(trace.path), frame.columns)
    if extra is not None:
        attrs = frame.attrs
        frame = frame.merge(extra, on=["request_id", "position"], how="left", validate="one_to_one")
        frame.attrs = attrs
    return frame


def threshold_tradeoff(trace: Trace, thresholds: np.ndarray) -> pd.DataFrame:
    """Mean exit loop (compute) against accuracy cost (share of tokens whose exit
    prediction differs from the final one) for each confidence threshold, through the
    simulator's own exit policy; the oracle (free by construction) as a reference row."""
    rows = []
    for t in thresholds:
        exits, wrong = apply_exit_policy(trace, ConfidenceExitConfig(threshold=float(t)),
                                         trace.num_loops)
        rows.append({"policy": "confidence", "threshold": float(t), "mean_exit_loop": exits.mean(),
                     "accuracy_cost": wrong.mean()})
    exits, wrong = apply_exit_policy(trace, ExitConfig(policy="oracle"), trace.num_loops)
    rows.append({"policy": "oracle", "threshold": np.nan, "mean_exit_loop": exits.mean(),
                 "accuracy_cost": wrong.mean()})
    return pd.DataFrame(rows)
