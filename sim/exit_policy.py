"""Exit policies: at which loop each token leaves, and what that costs in accuracy.

A policy maps every trace token to an exit loop in 1..N. `oracle` uses the
trace's exit_loop (the first loop already agreeing with the final one, so it is
free of error by construction); `confidence` exits at the first loop whose top-1
probability reaches the threshold, which can be wrong; `none` runs all loops.
Each is a function registered in `sim.registry.exit_registry`, with its typed config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.config import ExitConfig
from sim.errors import ConfigError
from sim.registry import exit_registry
from sim.trace import Trace

Exits = tuple[np.ndarray, np.ndarray]  # per token: exit loop (int8), exit prediction wrong (bool)


@dataclass
class ConfidenceExitConfig(ExitConfig):
    policy: str = "confidence"
    threshold: float = 0.9  # exit at the first loop whose top-1 probability reaches this

    def check(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"exit.threshold={self.threshold} must be in [0, 1]")


def confidence_exits(conf: np.ndarray, threshold: float) -> np.ndarray:
    """Exit loop (1-based, int8) of each token under exit=confidence: the first loop whose
    top-1 probability reaches the threshold; the last loop always exits. conf: (tokens, loops)."""
    confident = conf >= threshold
    confident[:, -1] = True
    return confident.argmax(axis=1).astype(np.int8) + 1


@exit_registry.register("none", order=2)
def no_exit(trace: Trace, cfg: ExitConfig, num_loops: int) -> Exits:
    """Every token runs every loop."""
    n_tok = trace.num_tokens
    return np.full(n_tok, num_loops, dtype=np.int8), np.zeros(n_tok, dtype=bool)


@exit_registry.register("oracle", order=0)
def oracle_exit(trace: Trace, cfg: ExitConfig, num_loops: int) -> Exits:
    """The trace's exit_loop: the first loop already predicting the final token."""
    return trace.exit_loop.copy(), np.zeros(trace.num_tokens, dtype=bool)


@exit_registry.register("confidence", config=ConfidenceExitConfig, order=1)
def confidence_exit(trace: Trace, cfg: ConfidenceExitConfig, num_loops: int) -> Exits:
    """The first loop with conf_k >= threshold; wrong where that loop's prediction differs
    from the final one (correct_k, else: exiting before the oracle exit)."""
    if trace.conf is None:
        raise ConfigError(f"exit=confidence needs conf_1..conf_{num_loops} columns, which {trace.path} lacks")
    exits = confidence_exits(trace.conf, cfg.threshold)
    if trace.correct is not None:
        wrong = ~trace.correct[np.arange(trace.num_tokens), exits - 1]
    else:  # without correct_k, the oracle exit says which loops already agree
        wrong = exits < trace.exit_loop
    return exits, wrong


def apply_exit_policy(trace: Trace, cfg: ExitConfig, num_loops: int) -> Exits:
    """Per trace token: (exit loop as int8, whether the exit prediction differs from the final one).
    The trace's loops must be the model's unless every token runs them all (exit=none)."""
    if cfg.policy != "none" and trace.num_loops != num_loops:
        raise ConfigError(f"the trace has num_loops={trace.num_loops} but model.loops={num_loops}")
    return exit_registry.get(cfg.policy, "exit").impl(trace, exit_registry.typed(cfg), num_loops)
