"""cost=constant: a fixed time per step, so tests can check the schedulers against
closed forms (a schedule's makespan is its step count times the step time)."""

from __future__ import annotations

from dataclasses import dataclass

from sim.config import CostConfig, HardwareConfig, ModelConfig
from sim.cost.base import StepLoad, at_least
from sim.registry import cost_registry


@dataclass
class ConstantCostConfig(CostConfig):
    """cost=constant: every loop step costs loop_step_s; prefill_s per admitted request;
    head_s per step that evaluates any exit head."""

    kind: str = "constant"
    loop_step_s: float = 1e-3
    prefill_s: float = 0.0
    head_s: float = 0.0

    def check(self) -> None:
        at_least(self.loop_step_s, "loop_step_s", True)
        at_least(self.prefill_s, "prefill_s", False)
        at_least(self.head_s, "head_s", False)


@cost_registry.register("constant", config=ConstantCostConfig, order=1)
class ConstantCost:
    def __init__(self, cfg: ConstantCostConfig, hw: HardwareConfig | None = None, m: ModelConfig | None = None):
        self.cfg = cfg

    def step_time(self, load: StepLoad) -> float:
        c = self.cfg
        return c.loop_step_s + (c.head_s if load.heads else 0.0) + c.prefill_s * len(load.prefill)
