"""The engine's step seam: how long one engine step takes, costed or executed.

The engine knows *what* a step does (a `StepLoad`: aggregate counts a cost model
prices) and, when asked, *who* is in it (a `StepBatch`: the slots, requests,
positions and loops a real backend must actually run). A `StepClock` turns a step
into seconds. `CostedSteps` prices it with a cost model (simulation); a real
backend (`traces/`) runs the model and returns the measured time. Schedulers and
slot bookkeeping are the same either way, which is what makes the simulated and
the real runs comparable step by step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sim.cost import CostModel, StepLoad


@dataclass(slots=True)
class StepBatch:
    """Who computes in one step; built only for clocks with `needs_batch`."""

    slots: np.ndarray  # slot indices computing in this step
    requests: np.ndarray  # workload request index per computing slot
    positions: np.ndarray  # 0-based generated-token position per computing slot
    loops: np.ndarray  # loop (1-based) each computing slot runs in this step
    leaving: np.ndarray  # bool per computing slot: this is its exit loop (coda, norm, head follow)
    admitted: np.ndarray  # requests whose prompts are prefilled before this step
    # bool per row: at loop scheduler.draft_loops under depthwise_spec, it runs the exit path to
    # read its draft and goes on (None: no row drafts)
    drafting: np.ndarray | None = None


class StepClock(Protocol):
    needs_batch: bool
    # A clock that decides exits (exit=live) sets `decides_exits` and, after each step,
    # `leaving`: per computing slot of the batch, whether its token leaves at this loop.
    # Optional: a clock without the attribute replays the workload's exits.

    def step_seconds(self, load: StepLoad, batch: StepBatch | None) -> float: ...


class CostedSteps:
    """A step lasts what the cost model says: the simulator's clock."""

    needs_batch = False

    def __init__(self, cost: CostModel):
        self.cost = cost

    def step_seconds(self, load: StepLoad, batch: StepBatch | None) -> float:
        return self.cost.step_time(load)
