"""Continuous depth-wise batching (Bae et al., 2024): every step is one loop step over
all active tokens, whatever loop each is at, which weight tying makes possible.
A token emits as soon as it exits and its request's next token (or a newly
admitted request) enters loop 1 in the very next step: no token waits for another."""

import numpy as np

from sim.registry import scheduler_registry
from sim.schedulers.base import Scheduler


@scheduler_registry.register("depthwise", label="continuous depth-wise", color="#009E73", order=3,
                             baseline_of=("speculative",), validated=True)
class DepthwiseScheduler(Scheduler):
    honours_exits = True

    def computing(self) -> np.ndarray:
        return self.state.active()

    def after_step(self, exited: np.ndarray, now: float) -> None:
        self.state.emit(exited, now)
        self.state.admit(now)
