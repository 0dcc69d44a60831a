"""cost=roofline: the model for real numbers, max(bytes / bandwidth, FLOPs / peak), each
derated by an achieved-efficiency factor, plus a fixed per-step overhead.

Why a roofline: decode steps of small batches are bound by reading weights and
KV, large batches by arithmetic, and depth-wise batching moves a step along
exactly that axis (more tokens share one read of the block's weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sim.config import CostConfig, HardwareConfig, ModelConfig
from sim.cost.base import StepLoad, at_least
from sim.errors import ConfigError
from sim.model_size import kv_bytes_per_token_layer, layer_params, lora_params_per_loop
from sim.registry import cost_registry


@dataclass
class RooflineCostConfig(CostConfig):
    """cost=roofline: achieved fraction of peak bandwidth / FLOP/s, and a fixed per-step
    cost (kernel launches, scheduling) that no roofline sees."""

    kind: str = "roofline"
    bandwidth_efficiency: float = 0.7
    flops_efficiency: float = 0.5
    step_overhead_s: float = 20e-6

    def check(self) -> None:
        at_least(self.step_overhead_s, "step_overhead_s", False)
        for key in ("bandwidth_efficiency", "flops_efficiency"):
            if not 0.0 < getattr(self, key) <= 1.0:
                raise ConfigError(f"cost.{key}={getattr(self, key)} must be in (0, 1]")


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
