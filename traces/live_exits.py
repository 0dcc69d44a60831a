"""exit=live against the trace: where the real model's confidence let tokens leave,
next to where the trace says they would have (its oracle exits and its recorded
confidences at the same threshold).

The run is teacher-forced on the trace's tokens, so each live exit can also be
scored against the token the recording model emitted there (`top1_is_fed`). When
the checkpoint is not the model that recorded the trace, disagreements mix two
things: different confidences, and a different model; the card of each says which.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.exit.confidence import confidence_exits
from sim.trace import Trace
from sim.workload import Workload


def live_exit_table(live_log: list[tuple[np.ndarray, ...]], trace: Trace, wl: Workload, threshold: float,
                    sequences: list[np.ndarray]) -> pd.DataFrame:
    """One row per generated token of the run: its live exit and the trace's exits."""
    req, pos, loop, conf, top1 = (np.concatenate(c) for c in zip(*live_log))
    src = wl.source[req] if wl.source is not None else req
    tok = trace.offsets[src] + pos
    trace_conf = (confidence_exits(trace.conf, threshold)[tok] if trace.conf is not None
                  else np.full(tok.size, -1, dtype=np.int8))
    fed = np.array([sequences[r][wl.prompt_len[r] + p] for r, p in zip(req.tolist(), pos.tolist())])
    return pd.DataFrame({"request": req, "position": pos, "trace_request": src, "live_exit": loop,
                         "live_conf": conf, "live_top1": top1, "fed_token": fed, "top1_is_fed": top1 == fed,
                         "trace_oracle_exit": trace.exit_loop[tok], "trace_confidence_exit": trace_conf}
                        ).sort_values(["request", "position"], ignore_index=True)


def live_exit_summary(table: pd.DataFrame, num_loops: int) -> dict[str, Any]:
    """Exit histograms and agreement, the numbers metrics.json carries for exit=live."""
    def hist(col):
        return [float((table[col] == k).mean()) for k in range(1, num_loops + 1)]

    out = {"live_exit_share": hist("live_exit"), "trace_oracle_exit_share": hist("trace_oracle_exit"),
           "live_mean_exit": float(table.live_exit.mean()),
           "live_vs_oracle_same_exit": float((table.live_exit == table.trace_oracle_exit).mean()),
           "live_top1_is_fed_token": float(table.top1_is_fed.mean())}
    if (table.trace_confidence_exit > 0).all():
        out["trace_confidence_exit_share"] = hist("trace_confidence_exit")
        out["live_vs_trace_confidence_same_exit"] = float((table.live_exit == table.trace_confidence_exit).mean())
    return out
