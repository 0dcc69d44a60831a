"""The scheduler interface, and the iteration-level logic three schedulers share.

A scheduler answers two questions for the engine: which slots compute in the
next loop step (`computing`), and what happens once a step ends (`after_step`):
which tokens are emitted and when waiting requests may join. Everything else,
the arrays, admission mechanics, KV and counters, is `SlotState`'s.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from sim.slots import SlotState


class Scheduler(ABC):
    name: ClassVar[str]
    # False: tokens run every loop whatever the exit policy says.
    honours_exits: ClassVar[bool] = True

    def __init__(self, state: SlotState):
        self.state = state

    @abstractmethod
    def computing(self) -> np.ndarray:
        """Boolean mask over slots: the tokens that run their next loop in the coming step."""

    @abstractmethod
    def after_step(self, exited: np.ndarray, now: float) -> None:
        """React to a finished step; `exited` marks tokens that just ran their exit loop."""


class IterationScheduler(Scheduler):
    """Sequence-level batching: a decode iteration takes the batch's tokens through the
    loops together and ends when the last of them has exited; only then are tokens
    emitted and, if `refill` allows, waiting requests admitted. Tokens that exit early
    keep their slot and idle: the synchronization problem."""

    def computing(self) -> np.ndarray:
        st = self.state
        return st.occupied & (st.loop <= st.exit_at)

    def after_step(self, exited: np.ndarray, now: float) -> None:
        if self.computing().any():
            return
        st = self.state
        st.emit(st.occupied, now)
        self.refill(now)

    def refill(self, now: float) -> None:
        self.state.admit(now)
