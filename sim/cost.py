"""How long one engine step takes on the accelerator.

An engine step is one loop step: one pass of the shared block over the tokens
the scheduler chose, plus whatever rides along (unique prelude/coda layers, exit
heads, KV fills of exited tokens, prefill of newly admitted prompts). The engine
describes it as a `StepLoad`; a cost model turns that into seconds.

`constant` exists so tests can check the schedulers against closed forms;
`roofline` is the model for real numbers: max(bytes / bandwidth, FLOPs / peak),
each derated by an achieved-efficiency factor, plus a fixed per-step overhead.
Why a roofline: decode steps of small batches are bound by reading weights and
KV, large batches by arithmetic, and depth-wise batching moves a step along
exactly that axis (more tokens share one read of the block's weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from sim.config import CostConfig, HardwareConfig, ModelConfig
from sim.errors import ConfigError
from sim.model_size import kv_bytes_per_token_layer, layer_params, lora_params_per_loop
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


def _at_least(value: float, key: str, minimum_excluded: bool) -> None:
    if value < 0 or (value == 0 and minimum_excluded):
        raise ConfigError(f"cost.{key}={value} must be {'> 0' if minimum_excluded else '>= 0'}")


@dataclass
class ConstantCostConfig(CostConfig):
    """cost=constant: every loop step costs loop_step_s; prefill_s per admitted request;
    head_s per step that evaluates any exit head."""

    kind: str = "constant"
    loop_step_s: float = 1e-3
    prefill_s: float = 0.0
    head_s: float = 0.0

    def check(self) -> None:
        _at_least(self.loop_step_s, "loop_step_s", True)
        _at_least(self.prefill_s, "prefill_s", False)
        _at_least(self.head_s, "head_s", False)


@dataclass
class RooflineCostConfig(CostConfig):
    """cost=roofline: achieved fraction of peak bandwidth / FLOP/s, and a fixed per-step
    cost (kernel launches, scheduling) that no roofline sees."""

    kind: str = "roofline"
    bandwidth_efficiency: float = 0.7
    flops_efficiency: float = 0.5
    step_overhead_s: float = 20e-6

    def check(self) -> None:
        _at_least(self.step_overhead_s, "step_overhead_s", False)
        for key in ("bandwidth_efficiency", "flops_efficiency"):
            if not 0.0 < getattr(self, key) <= 1.0:
                raise ConfigError(f"cost.{key}={getattr(self, key)} must be in (0, 1]")


@cost_registry.register("constant", config=ConstantCostConfig, order=1)
class ConstantCost:
    def __init__(self, cfg: ConstantCostConfig, hw: HardwareConfig | None = None, m: ModelConfig | None = None):
        self.cfg = cfg

    def step_time(self, load: StepLoad) -> float:
        c = self.cfg
        return c.loop_step_s + (c.head_s if load.heads else 0.0) + c.prefill_s * len(load.prefill)


@cost_registry.register("roofline", config=RooflineCostConfig, order=0)
class RooflineCost:
    def __init__(self, cfg: RooflineCostConfig, hw: HardwareConfig, m: ModelConfig):
        self.bw = hw.bandwidth_gb_s * 1e9 * cfg.bandwidth_efficiency
        self.peak = hw.peak_tflops * 1e12 * cfg.flops_efficiency
        self.overhead = cfg.step_overhead_s
        self.m = m
        b = m.dtype_bytes
        layer = layer_params(m)
        self.block_params = layer * m.layers_per_block
        self.lora_params = lora_params_per_loop(m)
        self.prelude_params = layer * m.prelude_layers
        self.coda_params = layer * m.coda_layers
        self.head_params = m.vocab * m.d_model
        self.kv_layer = kv_bytes_per_token_layer(m)
        self.attn_width = m.n_heads * m.head_dim
        self.kv_proj_params = 2 * m.d_model * m.n_kv_heads * m.head_dim
        self.block_bytes = self.block_params * b
        self.lora_bytes = self.lora_params * b
        self.prelude_bytes = self.prelude_params * b
        self.coda_bytes = self.coda_params * b
        self.head_bytes = self.head_params * b
        self.all_layers = m.prelude_layers + m.coda_layers + m.layers_per_block * m.loops
        self.all_params = self.prelude_params + self.coda_params + (self.block_params + self.lora_params) * m.loops
        self.all_bytes = self.prelude_bytes + self.coda_bytes + self.block_bytes + self.lora_bytes * m.loops
        self._prefill_cache: dict[tuple[int, ...], float] = {}

    def decode_time(self, s: StepLoad) -> float:
        m = self.m
        nbytes = self.block_bytes + self.lora_bytes * s.distinct_loops
        shared = s.kv_shared
        nbytes += self.kv_layer * (m.layers_per_block * (s.context - shared + s.tokens) + s.kv_proj_layers)
        flops = 2.0 * (self.block_params + self.lora_params) * s.tokens
        flops += 4.0 * m.layers_per_block * self.attn_width * s.context
        flops += 2.0 * self.kv_proj_params * s.kv_proj_layers
        if s.entering and m.prelude_layers:
            reread = shared if s.entering == s.tokens else 0
            nbytes += self.prelude_bytes + self.kv_layer * m.prelude_layers * (
                s.entering_context - reread + s.entering)
            flops += 2.0 * self.prelude_params * s.entering + 4.0 * m.prelude_layers * self.attn_width * s.entering_context
        if s.exiting and m.coda_layers:
            reread = shared if s.exiting == s.tokens else 0
            nbytes += self.coda_bytes + self.kv_layer * m.coda_layers * (s.exiting_context - reread + s.exiting)
            flops += 2.0 * self.coda_params * s.exiting + 4.0 * m.coda_layers * self.attn_width * s.exiting_context
        if s.entering:  # embedding rows of the new tokens
            nbytes += s.entering * m.d_model * m.dtype_bytes
        if s.heads:
            nbytes += self.head_bytes
            flops += 2.0 * self.head_params * s.heads
        return max(nbytes / self.bw, flops / self.peak)

    def prefill_time(self, prompts: Sequence[int]) -> float:
        """All layers and loops over every prompt, batched: weights read once, KV written once,
        causal attention over P^2/2 pairs, and the head for each prompt's last position."""
        key = tuple(prompts)
        hit = self._prefill_cache.get(key)
        if hit is not None:
            return hit
        total = sum(prompts)
        pairs = sum(p * p for p in prompts) / 2.0
        nbytes = self.all_bytes + self.head_bytes + total * self.kv_layer * self.all_layers
        flops = 2.0 * self.all_params * total + 4.0 * self.all_layers * self.attn_width * pairs
        flops += 2.0 * self.head_params * len(prompts)
        t = max(nbytes / self.bw, flops / self.peak)  # the step's overhead is charged once, by step_time
        if len(self._prefill_cache) < 100_000:
            self._prefill_cache[key] = t
        return t

    def step_time(self, load: StepLoad) -> float:
        t = self.decode_time(load) + self.overhead
        if load.prefill:
            t += self.prefill_time(load.prefill)
        return t


def make_cost_model(cfg: CostConfig, hw: HardwareConfig, model: ModelConfig) -> CostModel:
    """The registered cost model of `cfg.kind` (an unknown kind is a ConfigError)."""
    return cost_registry.get(cfg.kind, "cost").impl(cost_registry.typed(cfg), hw, model)
