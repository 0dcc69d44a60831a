"""exit=live: the real model's confidence decides each exit as the run goes.

The other policies replay a trace: every exit is known before the run starts. Under
`live` a token leaves after the first loop whose real top-1 probability (after the
coda, final norm and head: one exit semantics) reaches the threshold, which only a
real backend can know (`python -m traces.execute exit=live checkpoint=PATH`).
The workload therefore starts with every token allowed every loop, and a clock that
`decides_exits` lowers each token's exit when it leaves (`SlotState.settle_exits`).
A simulation has no model to ask, so `sim.run exit=live` stops with a pointer to
`exit=confidence`, which replays the confidences a trace recorded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.errors import ConfigError
from sim.exit_policy import ConfidenceExitConfig, Exits
from sim.registry import exit_registry
from sim.trace import Trace


@dataclass
class LiveExitConfig(ConfidenceExitConfig):
    policy: str = "live"

    def check(self) -> None:
        super().check()
        if not self.head_every_loop:
            raise ConfigError("exit=live decides from a check after every loop: exit.head_every_loop must be true")


@exit_registry.register("live", config=LiveExitConfig, order=3, decided_live=True)
def live_exit(trace: Trace, cfg: LiveExitConfig, num_loops: int) -> Exits:
    """Placeholders until the real model decides: every token may run every loop."""
    n_tok = trace.num_tokens
    return np.full(n_tok, num_loops, dtype=np.int8), np.zeros(n_tok, dtype=bool)
