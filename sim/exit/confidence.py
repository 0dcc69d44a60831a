"""exit=confidence: a token exits at the first loop whose top-1 probability reaches the
threshold, which a real deployment can decide but which can be wrong (its accuracy cost
is read from the trace's correct_k columns)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.config import ExitConfig
from sim.errors import ConfigError
from sim.exit.base import Exits
from sim.registry import exit_registry
from sim.trace import Trace


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
