"""The scheduler interface, and the iteration-level logic three schedulers share.

A scheduler answers three questions for the engine: which slots compute in the
next loop step (`computing`), what happens once a step ends (`after_step`): which
tokens are emitted and when waiting requests may join, and who joins first
(`admission_order`, FIFO unless overridden). Everything else, the arrays, admission
mechanics, KV and counters, is `SlotState`'s.

A new scheduler is one module in this package, registered with
`@scheduler_registry.register("name")` (found without being imported anywhere), and
one `conf/scheduler/<name>.yaml` (`defaults: [base_<name>, _self_]`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from sim.config import SchedulerConfig
from sim.slots import SlotState


class Scheduler(ABC):
    name: ClassVar[str]
    # False: tokens run every loop whatever the exit policy says.
    honours_exits: ClassVar[bool] = True

    def __init__(self, state: SlotState, cfg: SchedulerConfig | None = None):
        self.state = state
        self.cfg = cfg  # the variant's typed config (its own keys beside batch_size)
        if type(self).admission_order is not Scheduler.admission_order:
            state.order = self.admission_order

    def admission_order(self, waiting: np.ndarray) -> np.ndarray:
        """The arrived, waiting requests (indices into the workload, in arrival order) in
        the order they are offered free slots; admission stops at the first whose KV does
        not fit. FIFO here, and then `SlotState` takes a faster path that skips this call."""
        return waiting

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

    def __init__(self, state: SlotState, cfg: SchedulerConfig | None = None):
        super().__init__(state, cfg)
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
