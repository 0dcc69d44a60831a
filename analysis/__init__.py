"""Analysis of rrtsim traces and sweeps: one call loads each into pandas.

    from analysis import load_trace_frame, load_sweep
    tokens = load_trace_frame("traces/data/smollm2_r2_mc_r64_coda.parquet")  # one row per token
    points = load_sweep("multirun/sweep-1234abcd")                  # one row per sweep point
"""

from analysis.gather import load_sweep
from analysis.traces import load_trace_frame, trace_paths

__all__ = ["load_sweep", "load_trace_frame", "trace_paths"]
