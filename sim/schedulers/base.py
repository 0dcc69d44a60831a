"""The scheduler interface, and the iteration-level logic three schedulers share.

A scheduler answers three questions for the engine: which slots compute in the
next loop step (`computing`), what happens once a step ends (`after_step`): which
tokens are emitted and when waiting requests may join, and who joins first
(`admission_order`, FIFO unless overridden). Everything else, the arrays, admission
mechanics, KV and counters, is `SlotState`'s.

More hooks let a scheduler whose slots do not decode one row at a time (`speculative`,
`depthwise_spec`: several rows of a request in flight, sim/rows.py) shape the run around
the engine: what each trace token needs (`token_exits`), which slot bookkeeping it drives
(`make_state`), how a step advances the chosen slots (`step`), what the real model
decided about drafts (`accepts_live`, `settle_acceptance`), how the run checks itself
(`check_complete`), what a timeline shows (`shown_loops`) and which numbers of its own
the run reports (`extra_metrics`). The defaults are every other scheduler's.

A new scheduler is one module in this package, registered with
`@scheduler_registry.register("name")` (found without being imported anywhere), and
one `conf/scheduler/<name>.yaml` (`defaults: [base_<name>, _self_]`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from sim.config import ExitConfig, SchedulerConfig
from sim.cost import StepLoad
from sim.errors import InvariantError
from sim.exit_policy import Exits, apply_exit_policy
from sim.slots import SlotState
from sim.step import StepBatch
from sim.trace import Trace


class Scheduler(ABC):
    name: ClassVar[str]
    # False: tokens run every loop whatever the exit policy says.
    honours_exits: ClassVar[bool] = True
    # True: after each step the engine hands the clock's `accepted` to `settle_acceptance`
    # (a clock that decides_acceptance: depthwise_spec's scheduler.accept=live).
    accepts_live: bool = False

    def __init__(self, state: SlotState, cfg: SchedulerConfig | None = None):
        self.state = state
        self.cfg = cfg  # the variant's typed config (its own keys beside batch_size)
        if type(self).admission_order is not Scheduler.admission_order:
            state.queue.order = self.admission_order

    def admission_order(self, waiting: np.ndarray) -> np.ndarray:
        """The arrived, waiting requests (indices into the workload, in arrival order) in
        the order they are offered free slots; admission stops at the first whose KV does
        not fit. FIFO here, and then `SlotState` takes a faster path that skips this call."""
        return waiting

    @classmethod
    def token_exits(cls, trace: Trace, exit_cfg: ExitConfig, cfg: SchedulerConfig, loops: int) -> Exits:
        """Per trace token: the loop it leaves after, and whether that loop's prediction is
        wrong. `exit_cfg` is the policy in force (`none` unless `honours_exits`)."""
        return apply_exit_policy(trace, exit_cfg, loops)

    @classmethod
    def make_state(cls, cfg: SchedulerConfig, *args: Any, **kwargs: Any) -> SlotState:
        """The slot bookkeeping this scheduler drives, built from `SlotState`'s arguments."""
        return SlotState(*args, **kwargs)

    def extra_metrics(self) -> dict[str, Any]:
        """Numbers of this scheduler's own, added to (or overriding) the run's metrics."""
        return {}

    def step(self, idx: np.ndarray, want_batch: bool) -> tuple[StepLoad, np.ndarray, StepBatch | None]:
        """Advance the slots `computing` chose by one loop step: the step's load, the slots
        whose token just ran its exit loop, and the batch if the clock `needs_batch`."""
        return self.state.run(idx, want_batch)

    def settle_acceptance(self, accepted: np.ndarray) -> None:
        """The clock's verdict on the step just run, per row: the final token equals its draft."""
        raise InvariantError(f"scheduler {self.name} does not take live acceptance")

    def check_complete(self) -> None:
        """The run's own conservation checks, once, at its end."""
        self.state.check_complete()

    def shown_loops(self, idx: np.ndarray) -> np.ndarray:
        """Per slot of `idx`, the loop it runs in the coming step (0: idles), for timelines."""
        return self.state.slots.loop[idx]

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

    def computing(self) -> np.ndarray:
        # an iteration goes on while a resident token has loops left (with exits replayed from
        # a trace that is max(exit loop) steps; under exit=live it is only known as it happens);
        # without exits every resident token runs every loop of it
        if not self.honours_exits:
            return self.state.active()
        sl = self.state.slots
        return np.flatnonzero(sl.occupied & (sl.loop <= sl.exit_at))

    def after_step(self, exited: np.ndarray, now: float) -> None:
        st, sl = self.state, self.state.slots
        if not (sl.occupied & (sl.loop <= sl.exit_at)).any():
            st.emit(st.active(), now)
            self.refill(now)

    def refill(self, now: float) -> None:
        self.state.admit(now)
