"""Summary numbers of one run, and the per-request table behind them.

Latencies are per request: TTFT from arrival to the first emitted token, TPOT the
mean gap between its later tokens, e2e from arrival to the last token.
Slot utilization is the share of slot-steps that did useful loop work, with the
effective batch (most requests ever resident at once) as the number of slots, so
that a batch the memory capped is not counted as idle slots.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.slots import SlotState
from sim.workload import Workload


def _pct(values: np.ndarray, q: float) -> float:
    values = values[np.isfinite(values)]
    return float(np.percentile(values, q)) if values.size else float("nan")


def request_table(wl: Workload, st: SlotState) -> pd.DataFrame:
    return pd.DataFrame({
        "request_id": np.arange(wl.num_requests),
        "prompt_len": wl.prompt_len,
        "gen_len": wl.gen_len,
        "arrival_s": wl.arrival,
        "admitted_s": st.stats.admitted_at,
        "first_token_s": st.stats.first_token_at,
        "finish_s": st.stats.finished_at,
    })


def summarize(wl: Workload, st: SlotState, makespan: float, busy_s: float) -> dict[str, Any]:
    stats = st.stats
    ttft = stats.first_token_at - wl.arrival
    e2e = stats.finished_at - wl.arrival
    later = wl.gen_len - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(later > 0, (stats.finished_at - stats.first_token_at) / later, np.nan)
    slots = max(stats.peak_active, 1)
    return {
        "num_requests": wl.num_requests,
        "num_tokens": wl.num_tokens,
        "makespan_s": makespan,
        "busy_s": busy_s,
        "throughput_tok_s": wl.num_tokens / makespan if makespan > 0 else float("nan"),
        "mean_exit_loop": float(st.exits.mean()) if st.exits.size else float("nan"),
        "loop_steps": stats.steps,
        "loop_steps_per_token": stats.steps / max(wl.num_tokens, 1),
        "fill_token_loops": stats.fill_token_loops,
        "slot_utilization": stats.token_loops / (stats.steps * slots) if stats.steps else 0.0,
        "effective_batch": stats.peak_active,
        "peak_kv_bytes": int(st.memory.peak),
        "kv_capacity_bytes": float(st.memory.capacity),
        "ttft_p50_s": _pct(ttft, 50),
        "ttft_p99_s": _pct(ttft, 99),
        "tpot_p50_s": _pct(tpot, 50),
        "tpot_p99_s": _pct(tpot, 99),
        "e2e_p50_s": _pct(e2e, 50),
        "e2e_p99_s": _pct(e2e, 99),
    }
