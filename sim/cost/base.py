"""What every cost model shares: the load of one engine step, and how a config becomes
its cost model.

An engine step is one loop step: one pass of the shared block over the tokens
the scheduler chose, plus whatever rides along (unique prelude/coda layers, exit
heads, KV fills of exited tokens, prefill of newly admitted prompts). The engine
describes it as a `StepLoad`; a cost model (one module of `sim/cost/` each,
registered in `sim.registry.cost_registry`) turns that into seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from sim.config import CostConfig, HardwareConfig, ModelConfig
from sim.errors import ConfigError
from sim.registry import cost_registry


@dataclass(slots=True)
class StepLoad:
    tokens: int  # token-loops through the shared block (KV fills included)
    distinct_loops: int  # loops present in the step: each brings its own LoRA weights
    context: int  # sum of attended context lengths over those token-loops
    entering: int  # tokens starting loop 1: they also run the prelude layers
    entering_context: int
    exiting: int  # tokens running the coda layers: those leaving, or every token checking an exit
    exiting_context: int
    heads: int  # tokens evaluating the LM head (an exit check or the final prediction)
    kv_proj_layers: int  # layer-level K/V projections of skipped layers (kv_policy=propagate)
    prefill: Sequence[int]  # prompt lengths of requests prefilled before this step
    # Positions of `context` whose KV another token of the same request in this step already
    # reads (a speculative verify pass: K queries over one sequence): attended, so in the FLOPs,
    # but read once, so not in the bytes. Also taken off the prelude/coda context when every
    # token of the step enters/exits (a request's tokens move together).
    kv_shared: int = 0


class CostModel(Protocol):
    """A registered cost model is built as `cls(cfg, hardware, model)`."""

    def step_time(self, load: StepLoad) -> float: ...


def at_least(value: float, key: str, minimum_excluded: bool) -> None:
    if value < 0 or (value == 0 and minimum_excluded):
        raise ConfigError(f"cost.{key}={value} must be {'> 0' if minimum_excluded else '>= 0'}")


def make_cost_model(cfg: CostConfig, hw: HardwareConfig, model: ModelConfig) -> CostModel:
    """The registered cost model of `cfg.kind` (an unknown kind is a ConfigError)."""
    return cost_registry.get(cfg.kind, "cost").impl(cost_registry.typed(cfg), hw, model)
