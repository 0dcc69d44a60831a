"""The scheduler interface, and the iteration-level logic three schedulers share.

A scheduler answers two questions for the engine: which slots compute in the
next loop step (`computing`), and what happens once a step ends (`after_step`):
which tokens are emitted and when waiting requests may join. Everything else,
the arrays, admission mechanics, KV and counters, is `SlotState`'s.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from sim.config import ExitConfig, RunConfig
from sim.exit_policy import apply_exit_policy
from sim.slots import SlotState
from sim.trace import Trace


class Scheduler(ABC):
    name: ClassVar[str]
    # False: tokens run every loop whatever the exit policy says.
    honours_exits: ClassVar[bool] = True

    def __init__(self, state: SlotState):
        self.state = state

    # Hooks for a scheduler whose slots do not hold one token at a time (speculative):
    # the defaults are what every one-token-per-slot scheduler uses.
    @classmethod
    def token_exits(cls, trace: Trace, exit_cfg: ExitConfig, cfg: RunConfig) -> tuple[np.ndarray, np.ndarray]:
        """Per trace token: the loop it leaves after, and whether that loop's prediction is wrong."""
        return apply_exit_policy(trace, exit_cfg, cfg.model.loops)

    @classmethod
    def make_state(cls, cfg: RunConfig, *args: Any, **kwargs: Any) -> SlotState:
        """The slot bookkeeping this scheduler drives (SlotState's arguments after `cfg`)."""
        return SlotState(*args, **kwargs)

    def extra_metrics(self) -> dict[str, Any]:
        """Scheduler-specific numbers added to (or overriding) the run's metrics."""
        return {}

    @abstractmethod
    def computing(self) -> np.ndarray:
        """Indices of the slots whose tokens run their next loop in the coming step."""

    @abstractmethod
    def after_step(self, exited: np.ndarray, now: float) -> None:
        """React to a finished step; `exited` holds the slots whose token just ran its exit loop."""


class IterationScheduler(Scheduler):
    """Sequence-level batching: a decode iteration takes the resident requests' tokens
    through the loops together and lasts as many loop steps as its deepest token needs;
    only then are tokens emitted and, if `refill` allows, waiting requests admitted.
    Tokens that exit early keep their slot and idle: the synchronization problem."""

    def __init__(self, state: SlotState):
        super().__init__(state)
        self.steps_left = 0  # loop steps left in the current iteration

    def computing(self) -> np.ndarray:
        st = self.state
        if self.steps_left == 0:  # a new iteration starts with whoever is resident now
            active = st.active()
            if active.size == 0:
                return active
            self.steps_left = int(st.exit_at[active].max())
        if not self.honours_exits:  # every resident token runs every loop of the iteration
            return st.active()
        return np.flatnonzero(st.occupied & (st.loop <= st.exit_at))

    def after_step(self, exited: np.ndarray, now: float) -> None:
        self.steps_left -= 1
        if self.steps_left == 0:
            self.state.emit(self.state.active(), now)
            self.refill(now)

    def refill(self, now: float) -> None:
        self.state.admit(now)
