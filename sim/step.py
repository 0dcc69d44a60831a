"""The engine's step seam: how long one engine step takes, costed or executed.

The engine knows *what* a step does (a `StepLoad`: aggregate counts a cost model
prices) and, when asked, *who* is in it (a `StepBatch`: the rows, requests,
positions and loops a real backend must actually run). A `StepClock` turns a step
into seconds. `CostedSteps` prices it with a cost model (simulation); a real
backend (`traces/`) runs the model and returns the measured time. Schedulers and
slot bookkeeping are the same either way, which is what makes the simulated and
the real runs comparable step by step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.cost import CostModel, StepLoad

@dataclass(slots=True)
class StepBatch:
    """Who computes in one step, one entry per row (one decode of one generated position of
    one request, as one trace row); built only for clocks with `needs_batch`.

    Under `scheduler=depthwise_spec` a slot may appear several times (rows of one request at
    consecutive positions, each at its own loop); elsewhere each computing slot once, except
    a lockstep `speculative` verify step (k rows of a slot at one loop)."""

    slots: np.ndarray  # int64[n] slot of each row's request
    requests: np.ndarray  # int64[n] workload request index of each row
    positions: np.ndarray  # int64[n] 0-based generated position of each row
    loops: np.ndarray  # int64[n] loop (1-based) each row runs in this step
    leaving: np.ndarray  # bool[n] the row's token is final after this loop: coda, norm, head, emitted
    admitted: np.ndarray  # int64[m] requests whose prompts are prefilled before this step
    # bool[n] the row reads its draft at this loop (coda, norm, head) and goes on to the next
    # loop; the next position enters loop 1 with that draft. All False but under depthwise_spec.
    drafting: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.drafting is None:
            self.drafting = np.zeros(self.slots.size, dtype=bool)


class StepClock:
    """What turns a step into seconds, and what else it can decide.

    The capabilities are declared here with their defaults, so the engine reads them
    instead of probing: a clock sets the ones it has (as class or instance attributes).
    - `needs_batch`: `step_seconds` gets the step's `StepBatch` (a real backend runs it).
    - `decides_exits` (exit=live): after each step the clock's `leaving: bool[n]` says, per
      row of the batch, whether its token leaves at this loop.
    - `decides_acceptance` (depthwise_spec with scheduler.accept=live): after each step the
      clock's `accepted: bool[n]` says, for each row with `leaving`, whether its final token
      equals its draft.
    - `verb`: what the progress bar says the engine is doing with steps.
    """

    needs_batch: bool = False
    verb: str = "simulating"
    decides_exits: bool = False
    decides_acceptance: bool = False

    def step_seconds(self, load: StepLoad, batch: StepBatch | None) -> float:
        raise NotImplementedError


class CostedSteps(StepClock):
    """A step lasts what the cost model says: the simulator's clock."""

    def __init__(self, cost: CostModel):
        self.cost = cost

    def step_seconds(self, load: StepLoad, batch: StepBatch | None) -> float:
        return self.cost.step_time(load)
