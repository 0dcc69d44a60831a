"""`cost=layer_step`: a step costs a fixed time per decoder layer it runs.

Why: when an implementation sits far above the memory floor (the paper's Gemma runs
take about 103 ms per 18-layer step where reading the weights takes 3.2 ms, see
reference.md), a step's time is set by kernel launches and unfused per-layer work,
so it follows the number of layers run, not the bytes read or the tokens batched.
Depth-wise batching pays most in exactly this regime: a loop step runs one block
of layers whatever the mix of loops in it.

Layers run in one step:
- the shared block, each layer weighted by the parameters it runs: 1 + (LoRA
  parameters of one loop / layer parameters) for each distinct loop present
  (a relaxed model runs every loop's adapters that its tokens need), so ranks are
  priced from parameter counts alone;
- the prelude layers when any token enters loop 1, the coda layers when any leaves;
- a prefill pass over every layer and loop (with each loop's adapters once) in a
  step that admits requests, whatever their prompt lengths: one batched pass.
Plus `cost.head_s` per step evaluating an LM head, `cost.prefill_s` per admitted
request and `cost.step_overhead_s` per step (each 0 by default: conf/cost/layer_step.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.config import CostConfig, HardwareConfig, ModelConfig
from sim.cost.base import StepLoad, at_least
from sim.model_size import layer_params, lora_params_per_loop
from sim.registry import cost_registry


@dataclass
class LayerStepCostConfig(CostConfig):
    """cost=layer_step: `layer_s` per decoder layer run in a step; `head_s`, `prefill_s`
    and `step_overhead_s` as the other cost models charge them (0 by default)."""

    kind: str = "layer_step"
    layer_s: float = 5e-3
    head_s: float = 0.0
    prefill_s: float = 0.0
    step_overhead_s: float = 0.0

    def check(self) -> None:
        at_least(self.layer_s, "layer_s", True)
        for key in ("head_s", "prefill_s", "step_overhead_s"):
            at_least(getattr(self, key), key, False)


@cost_registry.register("layer_step", config=LayerStepCostConfig, order=2)
class LayerStepCost:
    def __init__(self, cfg: LayerStepCostConfig, hw: HardwareConfig | None, m: ModelConfig):
        self.layer_s = cfg.layer_s
        self.head_s = cfg.head_s
        self.prefill_s = cfg.prefill_s
        self.overhead = cfg.step_overhead_s
        self.block = m.layers_per_block
        # one loop's adapters, per block layer, in units of one layer's parameters
        self.lora_share = lora_params_per_loop(m) / (m.layers_per_block * layer_params(m))
        self.prelude = m.prelude_layers
        self.coda = m.coda_layers
        self.prefill_layers = m.prelude_layers + m.coda_layers + m.layers_per_block * m.loops * (1 + self.lora_share)

    def layers(self, s: StepLoad) -> float:
        """Layer-equivalents a decode step runs (the prefill pass excluded)."""
        n = self.block * (1.0 + self.lora_share * s.distinct_loops)
        if s.entering:
            n += self.prelude
        if s.exiting:
            n += self.coda
        return n

    def step_time(self, s: StepLoad) -> float:
        t = self.overhead + self.layer_s * self.layers(s)
        if s.heads:
            t += self.head_s
        if s.prefill:
            t += self.layer_s * self.prefill_layers + self.prefill_s * len(s.prefill)
        return t
