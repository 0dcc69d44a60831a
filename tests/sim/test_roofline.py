"""The roofline cost model term by term, against closed forms written out by hand for a
tiny model: every byte and FLOP of a decode step (shared block, per-loop LoRA, KV reads,
prelude and coda layers, embeddings, heads, propagate's K/V projections) and of prefill,
the per-step overhead charged exactly once, prefill or not, and the KV a speculative
verify step's queries share (`kv_shared`)."""

from dataclasses import replace

import pytest

from sim.config import HardwareConfig, ModelConfig
from sim.cost import StepLoad
from sim.cost.roofline import RooflineCost, RooflineCostConfig

# d_model 8, 2 heads of 4 (attention width 8), 1 KV head, MLP 16, vocab 32, bf16;
# 1 prelude + 2 loops x 3 + 2 coda layers, LoRA rank 2.
MODEL = ModelConfig(name="tiny", source_layers=9, loops=2, layers_per_block=3, prelude_layers=1, coda_layers=2,
                    d_model=8, n_heads=2, n_kv_heads=1, head_dim=4, d_mlp=16, vocab=32, lora_rank=2,
                    dtype_bytes=2, tied_embeddings=True)
LAYER = 8 * 8 + 8 * 4 + 8 * 4 + 8 * 8 + 3 * 8 * 16  # q, k, v, o, gate/up/down: 576 parameters
LORA_LAYER = 2 * (8 + 8) + 2 * (8 + 4) * 2 + 2 * (8 + 8) + 3 * 2 * (8 + 16)  # rank 2 x (in + out): 256
BLOCK, LORA = 3 * LAYER, 3 * LORA_LAYER  # the shared block; one loop's LoRA over it
KV = 2 * 1 * 4 * 2  # K and V of one token in one layer, bytes
HEAD = 32 * 8  # LM head parameters (tied embeddings)
WIDTH = 2 * 4  # attention width
OVERHEAD = 1e-3


def cost(bandwidth_gb_s: float, peak_tflops: float) -> RooflineCost:
    hw = HardwareConfig(name="test", memory_gb=1.0, bandwidth_gb_s=bandwidth_gb_s, peak_tflops=peak_tflops)
    return RooflineCost(RooflineCostConfig(bandwidth_efficiency=1.0, flops_efficiency=1.0,
                                           step_overhead_s=OVERHEAD), hw, MODEL)


BYTES_ONLY = cost(1.0, 1e30)  # 1e9 B/s, compute free: a step lasts its bytes / 1e9
FLOPS_ONLY = cost(1e30, 1e-3)  # 1e9 FLOP/s, reads free: a step lasts its FLOPs / 1e9

# 5 token-loops (one of them a KV fill) at 2 distinct loops over 100 attended positions;
# 2 tokens enter (prelude over 30 positions), 1 leaves (coda over 20), 3 heads, and
# propagate projects K/V for 6 skipped layers.
LOAD = StepLoad(tokens=5, distinct_loops=2, context=100, entering=2, entering_context=30, exiting=1,
                exiting_context=20, heads=3, kv_proj_layers=6, prefill=[])
DECODE_BYTES = (2 * BLOCK + 2 * LORA * 2  # the block once, each distinct loop's LoRA once
                + KV * (3 * (100 + 5) + 6)  # KV read over the context and written per token-loop; propagate's
                + 2 * 1 * LAYER + KV * 1 * (30 + 2)  # prelude weights and its KV, for entering tokens
                + 2 * 2 * LAYER + KV * 2 * (20 + 1)  # coda weights and its KV, for the leaving token
                + 2 * 8 * 2  # embedding rows of the 2 entering tokens
                + 2 * HEAD)  # the LM head, read once for the 3 heads
DECODE_FLOPS = (2 * (BLOCK + LORA) * 5 + 4 * 3 * WIDTH * 100  # block matmuls; attention over the context
                + 2 * (2 * 8 * 1 * 4) * 6  # propagate: K and V projections of 6 layers
                + 2 * LAYER * 2 + 4 * 1 * WIDTH * 30  # prelude for 2 entering tokens
                + 2 * 2 * LAYER * 1 + 4 * 2 * WIDTH * 20  # coda for the leaving token
                + 2 * HEAD * 3)  # 3 heads


def test_decode_bytes_and_flops():
    assert BYTES_ONLY.decode_time(LOAD) == pytest.approx(DECODE_BYTES / 1e9, rel=1e-12)
    assert FLOPS_ONLY.decode_time(LOAD) == pytest.approx(DECODE_FLOPS / 1e9, rel=1e-12)


def test_prelude_and_coda_only_with_tokens_entering_or_leaving():
    middle = StepLoad(tokens=5, distinct_loops=2, context=100, entering=0, entering_context=0, exiting=0,
                      exiting_context=0, heads=0, kv_proj_layers=0, prefill=[])
    assert BYTES_ONLY.decode_time(middle) == pytest.approx((2 * BLOCK + 4 * LORA + KV * 3 * 105) / 1e9, rel=1e-12)
    assert FLOPS_ONLY.decode_time(middle) == pytest.approx((2 * (BLOCK + LORA) * 5 + 4 * 3 * WIDTH * 100) / 1e9,
                                                           rel=1e-12)


def test_prefill_runs_every_layer_and_loop_over_the_prompts():
    prompts = [3, 5]
    layers = 1 + 2 + 3 * 2  # prelude + coda + block x loops
    params = 3 * LAYER + (BLOCK + LORA) * 2
    # weights read once (the shared block once for all loops: it is one set of weights), each
    # loop's LoRA, the head once, KV written for 8 positions in every layer pass
    nbytes = 2 * (3 * LAYER + BLOCK + 2 * LORA) + 2 * HEAD + KV * layers * 8
    flops = 2 * params * 8 + 4 * layers * WIDTH * (3 * 3 + 5 * 5) / 2 + 2 * HEAD * 2  # causal pairs; 2 heads
    assert BYTES_ONLY.prefill_time(prompts) == pytest.approx(nbytes / 1e9, rel=1e-12)
    assert FLOPS_ONLY.prefill_time(prompts) == pytest.approx(flops / 1e9, rel=1e-12)


def test_step_overhead_is_charged_once_per_step_with_or_without_prefill():
    with_prefill = StepLoad(**{**{f: getattr(LOAD, f) for f in LOAD.__slots__}, "prefill": [3, 5]})
    for model in (BYTES_ONLY, FLOPS_ONLY):
        assert model.step_time(LOAD) == pytest.approx(model.decode_time(LOAD) + OVERHEAD, rel=1e-12)
        assert model.step_time(with_prefill) == pytest.approx(
            model.decode_time(LOAD) + model.prefill_time([3, 5]) + OVERHEAD, rel=1e-12)


def test_kv_shared_positions_are_attended_but_read_once():
    """A speculative verify step at the last loop: 2 requests x 3 drafted tokens, first
    positions attending to 13 and 15 positions, so 3 x 28 + 2 x 3 = 90 attended positions
    of which 15 + 17 = 32 are distinct: 58 are KV another query of the same request reads."""
    verify = StepLoad(tokens=6, distinct_loops=1, context=90, entering=0, entering_context=0, exiting=6,
                      exiting_context=90, heads=6, kv_proj_layers=0, prefill=[], kv_shared=58)
    nbytes = (2 * BLOCK + 2 * LORA + KV * 3 * (90 - 58 + 6)  # KV read once per request, written per token
              + 2 * 2 * LAYER + KV * 2 * (90 - 58 + 6)  # every token leaves: the coda shares the reads too
              + 2 * HEAD)
    flops = (2 * (BLOCK + LORA) * 6 + 4 * 3 * WIDTH * 90  # every query still attends to its whole context
             + 2 * 2 * LAYER * 6 + 4 * 2 * WIDTH * 90
             + 2 * HEAD * 6)
    assert BYTES_ONLY.decode_time(verify) == pytest.approx(nbytes / 1e9, rel=1e-12)
    assert FLOPS_ONLY.decode_time(verify) == pytest.approx(flops / 1e9, rel=1e-12)


def test_kv_shared_leaves_prelude_and_coda_reads_alone_when_only_some_tokens_pass_them():
    """In LOAD 2 of 5 tokens enter and 1 leaves: only the shared block's KV reads shrink."""
    shared = replace(LOAD, kv_shared=40)
    assert BYTES_ONLY.decode_time(shared) == pytest.approx((DECODE_BYTES - KV * 3 * 40) / 1e9, rel=1e-12)
    assert FLOPS_ONLY.decode_time(shared) == pytest.approx(DECODE_FLOPS / 1e9, rel=1e-12)
