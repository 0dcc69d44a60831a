"""Exit policies: at which loop each token leaves, and what that costs in accuracy.

A policy maps every trace token to an exit loop in 1..N. `oracle` uses the
trace's exit_loop (the first loop already agreeing with the final one, so it is
free of error by construction); `confidence` exits at the first loop whose top-1
probability reaches the threshold, which can be wrong; `none` runs all loops.
"""

from __future__ import annotations

import numpy as np

from sim.config import ExitConfig
from sim.errors import ConfigError
from sim.trace import Trace


def confidence_exits(conf: np.ndarray, threshold: float) -> np.ndarray:
    """Exit loop (1-based, int8) of each token under exit=confidence: the first loop whose
    top-1 probability reaches the threshold; the last loop always exits. conf: (tokens, loops)."""
    confident = conf >= threshold
    confident[:, -1] = True
    return confident.argmax(axis=1).astype(np.int8) + 1


def apply_exit_policy(trace: Trace, cfg: ExitConfig, num_loops: int) -> tuple[np.ndarray, np.ndarray]:
    """Per trace token: (exit loop as int8, whether the exit prediction differs from the final one)."""
    n_tok = trace.num_tokens
    if cfg.policy == "none":
        return np.full(n_tok, num_loops, dtype=np.int8), np.zeros(n_tok, dtype=bool)
    if trace.num_loops != num_loops:
        raise ConfigError(f"the trace has num_loops={trace.num_loops} but model.loops={num_loops}; "
                          f"exit={cfg.policy} needs them equal (or use exit=none)")
    if cfg.policy == "oracle":
        return trace.exit_loop.copy(), np.zeros(n_tok, dtype=bool)
    if trace.conf is None:
        raise ConfigError(f"exit=confidence needs conf_1..conf_{num_loops} columns, which {trace.path} lacks")
    exits = confidence_exits(trace.conf, cfg.threshold)
    if trace.correct is not None:
        wrong = ~trace.correct[np.arange(n_tok), exits - 1]
    else:  # without correct_k, the oracle exit says which loops already agree
        wrong = exits < trace.exit_loop
    return exits, wrong
