"""cost=gpu_profile: a step priced from operator times measured on a real GPU.

Why: the roofline's efficiencies (0.7 of bandwidth, 0.5 of FLOP/s, 20 us per step) are
assumptions, and the fixed per-step cost they leave out is what decides whether depth-wise
batching pays. Vidur measured both on A100 and H100: every non-attention operator of a
Llama-2-7B and a phi-2 decoder layer for 1 to 4096 tokens, and a vLLM-style loop's CPU work per
step (sim/gpu_profiles.py reads them; sim/profiles/vidur/ bundles them). A recursive model of
the same layer shape runs the same operators, so its step is priced from the measurements:

- Shared block: its dense operators run once over all rows of the step, at the total row count
  (`layers_per_block x layer(tokens)`), whatever loops the rows are at: depth-wise batching's
  premise, now at measured cost.
- LoRA (not measured): each loop present adds its adapters, priced from their own bytes and
  FLOPs: max(bytes / B, FLOPs / F, kernels x k), with two kernels per adapted matrix and k the
  shortest operator the same GPU was measured running (a kernel takes at least that).
- Prelude and coda layers: the same measured layer, at the rows entering loop 1 / leaving.
- LM head (not measured): the measured MLP up projection of the same shape and row count,
  scaled by the head's parameters over the projection's (both read d_model-wide rows; time
  follows the weight size in both the weight-bound and the compute-bound region), plus one
  measured norm (the final norm). The embedding lookup is measured.
- Decode attention (not copied from Vidur): the KV bytes read and written, at bandwidth B;
  its FLOPs at F; at least one kernel per layer.
- Prefill: every layer and loop's dense operators at the prompts' total token count, each
  loop's LoRA, causal attention from FLOPs (P^2/2 pairs per prompt) at F, KV writes at B, and
  the head for each prompt's last position.
- CPU overhead per step, by batch size, from Vidur's A100 host (`cost.cpu_overhead`): scheduling
  and input preparation at the step's rows plus prompts prefilled, in a step where tokens enter
  loop 1 (a new forward pass: under iteration-level batching its later loop steps continue the
  same pass); sampling and output processing at the rows that produce logits (`heads`). A
  vanilla model's step is both, at its batch: exactly the measured per-step overhead. The H100
  uses the A100 host's table (the only one measured).

B and F come from the same GPU's measured dense operators: B = a layer's weight bytes over its
four projections' time at 1 token (flat, weight-read bound: 0.64-0.77 of peak bandwidth),
F = the projections' FLOPs over their time at 4096 tokens (compute bound). Token counts
beyond 4096 (long prefills) are extrapolated linearly, batch sizes below 8 clamped to batch
8's CPU time, above 128 extrapolated; each warns once (sim/gpu_profiles.py). Tensor
parallelism 1 only: the CPU table has these models at TP 1 alone and all-reduce times were not
measured. The rows were measured in fp16, so the model must have dtype_bytes=2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from sim.config import CostConfig, HardwareConfig, ModelConfig
from sim.cost import StepLoad
from sim.errors import ConfigError
from sim.gpu_profiles import cpu_overheads, match, resolve
from sim.model_size import kv_bytes_per_token_layer, layer_params, linear_shapes, lora_params_per_loop
from sim.registry import cost_registry


@dataclass
class GpuProfileCostConfig(CostConfig):
    """cost=gpu_profile: `profile`, a measured GPU (a100, h100; None: the one measured on
    `hardware`); `cpu_overhead`, charge the measured per-step CPU work of the serving loop."""

    kind: str = "gpu_profile"
    profile: Optional[str] = None
    cpu_overhead: bool = True


@cost_registry.register("gpu_profile", config=GpuProfileCostConfig, order=4)
class GpuProfileCost:
    def __init__(self, cfg: GpuProfileCostConfig, hw: HardwareConfig, m: ModelConfig):
        self.profile = resolve(cfg.profile, hw.name)
        self.measured = match(self.profile, m)
        if m.dtype_bytes != 2:
            raise ConfigError(f"cost.profile={self.profile.name} was measured in fp16: model.dtype_bytes must "
                              f"be 2, not {m.dtype_bytes}")
        self.cpu = cpu_overheads(self.measured.key) if cfg.cpu_overhead else None
        self.m = m
        meas = self.measured
        layer = layer_params(m)
        top = meas.projections.counts[-1]
        self.bandwidth = layer * m.dtype_bytes / meas.projections(1)  # bytes/s
        self.flops = 2.0 * layer * top / meas.projections(top)  # FLOP/s
        self.kernel_s = meas.smallest_kernel_s
        self.layer = meas.dense
        self.lora_params = lora_params_per_loop(m)
        self.lora_kernels = 2 * len(linear_shapes(m)) * m.layers_per_block if m.lora_rank else 0
        up = m.d_model * m.d_mlp * (2 if m.gated_mlp else 1)
        self.head_scale = m.vocab * m.d_model / up
        self.kv_layer = kv_bytes_per_token_layer(m)
        self.attn_width = m.n_heads * m.head_dim
        self.kv_proj_params = 2 * m.d_model * m.n_kv_heads * m.head_dim
        self.all_layers = m.prelude_layers + m.coda_layers + m.layers_per_block * m.loops

    def roofline(self, nbytes: float, flops: float, kernels: int) -> float:
        """An unmeasured operator at the GPU's measured bandwidth and FLOP/s, and never
        faster than its kernels each taking the shortest measured operator's time."""
        return max(nbytes / self.bandwidth, flops / self.flops, kernels * self.kernel_s)

    def lora(self, loops: int, rows: int) -> float:
        """`loops` loops' adapters over `rows` rows (each row through its own loop's)."""
        if not self.lora_kernels or not loops or not rows:
            return 0.0
        return self.roofline(self.lora_params * self.m.dtype_bytes * loops, 2.0 * self.lora_params * rows,
                             self.lora_kernels * loops)

    def decode_attention(self, layers: int, rows: int, context: int, shared: int = 0) -> float:
        """Attention of `rows` rows over `context` cached positions in each of `layers` layers:
        KV read once per position (`shared` positions another row of the step already reads)
        and written once per row."""
        if not layers or not rows:
            return 0.0
        nbytes = self.kv_layer * layers * (context - shared + rows)
        return self.roofline(nbytes, 4.0 * layers * self.attn_width * context, layers)

    def head(self, rows: int) -> float:
        meas = self.measured
        return meas.up_proj(rows) * self.head_scale + meas.norm(rows)

    def decode_time(self, s: StepLoad) -> float:
        m = self.m
        t = 0.0
        if s.tokens:
            t += m.layers_per_block * self.layer(s.tokens) + self.lora(s.distinct_loops, s.tokens)
            t += self.decode_attention(m.layers_per_block, s.tokens, s.context, s.kv_shared)
        if s.kv_proj_layers:  # K/V projections of skipped layers (kv_policy=propagate)
            t += self.roofline(self.kv_layer * s.kv_proj_layers, 2.0 * self.kv_proj_params * s.kv_proj_layers,
                               s.kv_proj_layers)
        if s.entering:
            t += self.measured.embedding(s.entering)
            if m.prelude_layers:
                shared = s.kv_shared if s.entering == s.tokens else 0
                t += m.prelude_layers * self.layer(s.entering)
                t += self.decode_attention(m.prelude_layers, s.entering, s.entering_context, shared)
        if s.exiting and m.coda_layers:
            shared = s.kv_shared if s.exiting == s.tokens else 0
            t += m.coda_layers * self.layer(s.exiting)
            t += self.decode_attention(m.coda_layers, s.exiting, s.exiting_context, shared)
        if s.heads:
            t += self.head(s.heads)
        return t

    def prefill_time(self, prompts: Sequence[int]) -> float:
        """Every layer and loop over all prompts as one batch of their total token count."""
        m = self.m
        total = int(sum(prompts))
        if not total:
            return 0.0
        pairs = sum(p * p for p in prompts) / 2.0
        t = self.all_layers * self.layer(total) + self.lora(m.loops, total * m.loops)
        t += self.roofline(self.kv_layer * self.all_layers * total, 4.0 * self.all_layers * self.attn_width * pairs,
                           self.all_layers)
        return t + self.measured.embedding(total) + self.head(len(prompts))

    def cpu_time(self, s: StepLoad) -> float:
        if self.cpu is None:
            return 0.0
        start, sampled = self.cpu
        t = start(s.tokens + len(s.prefill)) if s.entering or s.prefill else 0.0
        return t + (sampled(s.heads) if s.heads else 0.0)

    def step_time(self, load: StepLoad) -> float:
        t = self.decode_time(load) + self.cpu_time(load)
        if load.prefill:
            t += self.prefill_time(load.prefill)
        return t
