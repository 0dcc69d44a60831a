"""Load and validate exit traces: the one place where a trace file becomes arrays.

A trace has one row per generated token (schema in docs/traces.md). Everything the
simulator later assumes (contiguous positions, exit loops in range, one prompt
length per request) is checked here, so the rest of the code can trust it; a
bad file raises `TraceError` naming the file, the column and the first bad row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sim.errors import TraceError
from sim.layout import Layout
from sim.trace_io import write_trace_parquet

REQUIRED = ("request_id", "position", "prompt_len", "exit_loop")
_PER_LOOP = re.compile(r"^(conf|correct)_\d+$")
# The best bundled real trace (its card is beside it in traces/data/); conf/config.yaml's
# default model, smollm2_135m_r2_mc, is the layout that recorded it. Only the Parquet
# file is read here, so the simulator still needs no torch.
DEFAULT_TRACE = Path(__file__).resolve().parent.parent / "traces" / "data" / "smollm2_r2_mc_r64_coda.parquet"


class RequestTokens:
    """Tokens stored flat, request after request: what traces and workloads share."""

    gen_len: np.ndarray  # (R,) tokens of each request
    exit_loop: np.ndarray  # (T,) one entry per token

    @property
    def num_requests(self) -> int:
        return int(self.gen_len.size)

    @property
    def num_tokens(self) -> int:
        return int(self.exit_loop.size)

    @property
    def offsets(self) -> np.ndarray:
        """(R+1,) start of each request's tokens in the token arrays."""
        return np.concatenate(([0], np.cumsum(self.gen_len)))


@dataclass
class Trace(RequestTokens):
    """Tokens sorted by (request, position); per-request arrays indexed 0..R-1."""

    path: str
    num_loops: int
    request_id: np.ndarray  # (R,) int64, the file's ids
    prompt_len: np.ndarray  # (R,) int64
    gen_len: np.ndarray  # (R,) int64
    exit_loop: np.ndarray  # (T,) int8, 1..num_loops
    conf: Optional[np.ndarray] = None  # (T, num_loops) float32, top-1 prob after loop k
    correct: Optional[np.ndarray] = None  # (T, num_loops) bool, loop-k pred == final
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def layout(self) -> Optional[Layout]:
        """The layout of the model that recorded the trace, if its metadata names one."""
        return Layout.from_metadata(self.metadata)


def _read(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    if not path.exists():
        raise TraceError(f"{path}: no such file")
    if path.is_dir():
        raise TraceError(f"{path}: is a directory, not a trace file")
    # The content decides, not the name: Parquet files start with the magic bytes PAR1.
    with open(path, "rb") as f:
        is_parquet = f.read(4) == b"PAR1"
    suffix = ".parquet" if is_parquet else ".csv" if path.suffix.lower() in (".csv", ".txt", ".tsv", "") else path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
            return frame, {}
        # Read only what the simulator uses: recorded traces carry many more columns.
        names = pq.read_schema(path).names
        wanted = [c for c in names if c in REQUIRED or _PER_LOOP.match(c)]
        table = pq.read_table(path, columns=wanted if set(REQUIRED) <= set(wanted) else None)
    except pd.errors.EmptyDataError:
        raise TraceError(f"{path}: empty file") from None
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        kind = "CSV" if suffix == ".csv" else "Parquet or CSV"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TraceError(f"{path}: not a readable {kind} file ({detail})") from None
    meta = {k.decode(errors="replace"): v.decode(errors="replace")
            for k, v in (table.schema.metadata or {}).items() if not k.startswith(b"pandas")}
    return table.to_pandas(split_blocks=True, self_destruct=True), meta


def _fail(path: str, column: str, frame: pd.DataFrame, bad: np.ndarray, what: str) -> None:
    """Raise naming the first offending row (0-based row of the file) and its value."""
    idx = np.flatnonzero(bad)
    if idx.size:
        row = idx[0]
        value = frame[column].iloc[row]
        value = value.item() if isinstance(value, np.generic) else value  # 3, not np.int64(3)
        more = f" ({idx.size} rows in all)" if idx.size > 1 else ""
        raise TraceError(f"{path}: column '{column}', row {row}: {value!r} {what}{more}")


def _wrong_type(path: str, column: str, frame: pd.DataFrame, want: str) -> None:
    """A column of the wrong type: name the first row whose value is not a number."""
    series = frame[column]
    numeric = pd.to_numeric(series, errors="coerce")
    _fail(path, column, frame, (numeric.isna() & series.notna()).to_numpy(), f"is not {want}")
    raise TraceError(f"{path}: column '{column}' must be {want}, found {series.dtype}")


def _int_column(path: str, frame: pd.DataFrame, column: str) -> np.ndarray:
    series = frame[column]
    if not (pd.api.types.is_integer_dtype(series) or pd.api.types.is_float_dtype(series)):
        _wrong_type(path, column, frame, "an integer")
    if pd.api.types.is_integer_dtype(series) and not series.hasnans:
        return series.to_numpy(dtype=np.int64)
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    _fail(path, column, frame, ~np.isfinite(values), "is not a finite number")
    _fail(path, column, frame, values != np.round(values), "is not an integer")
    return values.astype(np.int64)


def _num_loops(path: str, meta: dict[str, str], given: Optional[int], frame: pd.DataFrame) -> int:
    stored = meta.get("num_loops")
    if stored is not None:
        try:
            stored_n = int(stored)
        except ValueError:
            raise TraceError(f"{path}: metadata num_loops={stored!r} is not an integer") from None
        if given is not None and given != stored_n:
            raise TraceError(f"{path}: trace.num_loops={given} but the file's metadata says num_loops={stored_n}")
        n = stored_n
    elif given is not None:
        n = given
    else:
        raise TraceError(f"{path}: num_loops unknown: the file has no 'num_loops' metadata; "
                         "pass trace.num_loops=N")
    if n < 1:
        raise TraceError(f"{path}: num_loops={n} must be >= 1")
    return n


def _per_loop(path: str, frame: pd.DataFrame, prefix: str, n: int) -> Optional[np.ndarray]:
    """Gather prefix_1..prefix_n into a (T, n) array, or None if the trace has none."""
    pattern = re.compile(rf"^{prefix}_(\d+)$")
    present = sorted(int(m.group(1)) for c in frame.columns if (m := pattern.match(str(c))))
    if not present:
        return None
    if present != list(range(1, n + 1)):
        want = ", ".join(f"{prefix}_{k}" for k in range(1, n + 1))
        raise TraceError(f"{path}: columns {prefix}_k must be exactly {want} for num_loops={n}; "
                         f"found {', '.join(f'{prefix}_{k}' for k in present)}")
    cols = []
    for k in range(1, n + 1):
        col = f"{prefix}_{k}"
        series = frame[col]
        if prefix == "conf":
            if not (pd.api.types.is_float_dtype(series) or pd.api.types.is_integer_dtype(series)):
                _wrong_type(path, col, frame, "a number in [0, 1]")
            v = series.to_numpy(dtype=np.float64, na_value=np.nan)
            _fail(path, col, frame, ~np.isfinite(v), "is not a finite number")
            _fail(path, col, frame, (v < 0) | (v > 1), "is outside [0, 1]")
            cols.append(v.astype(np.float32))
        else:
            if pd.api.types.is_bool_dtype(series):
                cols.append(series.to_numpy(dtype=bool))
                continue
            if not pd.api.types.is_integer_dtype(series):
                raise TraceError(f"{path}: column '{col}' must be boolean (true/false or 0/1), found {series.dtype}")
            v = series.to_numpy()
            _fail(path, col, frame, (v != 0) & (v != 1), "is not a boolean (0 or 1)")
            cols.append(v.astype(bool))
    return np.stack(cols, axis=1)


def load_trace(path: str | Path | None = None, num_loops: Optional[int] = None) -> Trace:
    """Read a Parquet or CSV trace and check it against the schema.

    `path=None` loads the bundled default trace. `num_loops` supplies the loop count
    (needed for CSV) or, for Parquet, is checked against the file's metadata.
    """
    path = Path(path) if path is not None else DEFAULT_TRACE
    frame, meta = _read(path)
    return trace_from_frame(frame, str(path), num_loops, meta)


def trace_from_frame(frame: pd.DataFrame, path: str, num_loops: Optional[int] = None,
                     meta: Optional[dict[str, str]] = None) -> Trace:
    """Validate an in-memory trace table; `path` only names it in error messages."""
    meta = meta or {}
    if len(frame) == 0:
        raise TraceError(f"{path}: the trace has no rows")
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise TraceError(f"{path}: missing required column(s) {', '.join(missing)}; "
                         f"found {', '.join(map(str, frame.columns))}")
    n = _num_loops(path, meta, num_loops, frame)
    cols = {c: _int_column(path, frame, c) for c in REQUIRED}
    _fail(path, "prompt_len", frame, cols["prompt_len"] < 0, "is negative")
    _fail(path, "position", frame, cols["position"] < 0, "is negative")
    _fail(path, "exit_loop", frame, (cols["exit_loop"] < 1) | (cols["exit_loop"] > n),
          f"is outside 1..{n}")
    conf = _per_loop(path, frame, "conf", n)
    correct = _per_loop(path, frame, "correct", n)

    order = np.lexsort((cols["position"], cols["request_id"]))
    rid, pos, plen = (cols[c][order] for c in ("request_id", "position", "prompt_len"))
    starts = np.flatnonzero(np.r_[True, rid[1:] != rid[:-1]])
    gen_len = np.diff(np.r_[starts, rid.size])
    expected = np.arange(rid.size) - np.repeat(starts, gen_len)
    bad = pos != expected
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row = int(order[i])
        dup = i > 0 and rid[i] == rid[i - 1] and pos[i] == pos[i - 1]
        what = "is duplicated" if dup else f"breaks the 0-based contiguous sequence (expected {expected[i]})"
        raise TraceError(f"{path}: column 'position', row {row}: {pos[i]} {what} in request {rid[i]}")
    varying = plen != np.repeat(plen[starts], gen_len)
    if varying.any():
        i = int(np.flatnonzero(varying)[0])
        raise TraceError(f"{path}: column 'prompt_len', row {int(order[i])}: {plen[i]} differs from "
                         f"{plen[starts][np.searchsorted(starts, i, side='right') - 1]} earlier in request {rid[i]}")
    return Trace(
        path=str(path),
        num_loops=n,
        request_id=rid[starts],
        prompt_len=plen[starts],
        gen_len=gen_len.astype(np.int64),
        exit_loop=cols["exit_loop"][order].astype(np.int8),
        conf=None if conf is None else conf[order],
        correct=None if correct is None else correct[order],
        metadata=meta,
    )


def write_trace(frame: pd.DataFrame, path: str | Path, num_loops: int, provenance: dict[str, str]) -> None:
    """Write a trace as Parquet with `num_loops` and provenance (and, when known, the model
    layout: `sim.layout.Layout.to_metadata`) in the key-value metadata, atomically."""
    write_trace_parquet(frame, path, {**provenance, "num_loops": num_loops})
