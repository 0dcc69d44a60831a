"""Turn a trace into the requests an engine serves: who arrives when, with which tokens.

The trace is replayed as it is by default (every request once, all at t=0, FIFO
in request_id order). `num_requests` resamples whole requests with replacement,
so per-request structure (lengths, runs of easy tokens) survives; Poisson
arrivals turn the offline batch job into online serving.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.config import WorkloadConfig
from sim.registry import arrival_registry
from sim.trace import RequestTokens, Trace


@dataclass
class Workload(RequestTokens):
    arrival: np.ndarray  # (R,) float64 seconds, non-decreasing: admission order is FIFO
    prompt_len: np.ndarray  # (R,) int64
    gen_len: np.ndarray  # (R,) int64
    exit_loop: np.ndarray  # (T,) int8, tokens of request r at offsets[r]:offsets[r+1]
    wrong: np.ndarray  # (T,) bool, exit prediction differs from the final loop's
    num_loops: int
    source: np.ndarray | None = None  # (R,) index of each request in the trace (a real backend needs its tokens)


def _token_index(offsets: np.ndarray, gen_len: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Indices of all tokens of the picked requests, in pick order, without a Python loop."""
    lengths = gen_len[picks]
    starts = np.repeat(offsets[picks] - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return starts + np.arange(int(lengths.sum()))


def build_workload(trace: Trace, exit_loop: np.ndarray, wrong: np.ndarray, num_loops: int,
                   cfg: WorkloadConfig, seed: int) -> Workload:
    """Requests of `trace` with the exit policy's per-token `exit_loop` and `wrong` flags."""
    rng = np.random.default_rng(seed)
    prompt_len, gen_len = trace.prompt_len, trace.gen_len
    picks = np.arange(gen_len.size)
    if cfg.num_requests is not None:
        picks = rng.integers(0, gen_len.size, size=cfg.num_requests)
        idx = _token_index(trace.offsets, gen_len, picks)
        prompt_len, gen_len, exit_loop, wrong = prompt_len[picks], gen_len[picks], exit_loop[idx], wrong[idx]
    n = gen_len.size
    arrival = arrival_registry.get(cfg.arrival, "workload.arrival").impl(rng, n, cfg.rate)
    return Workload(arrival, prompt_len.astype(np.int64), gen_len.astype(np.int64),
                    exit_loop.astype(np.int8), wrong.astype(bool), num_loops, picks)
