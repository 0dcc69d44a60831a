"""Cost and memory models against the paper's counts and the roofline's two regimes."""

import pytest

from sim.config import HardwareConfig, MemoryConfig, ModelConfig
from sim.cost import StepLoad
from sim.cost.roofline import RooflineCost, RooflineCostConfig
from sim.memory import KVMemory
from sim.model_size import kv_bytes_per_token, non_embedding_params
from sim.validate import load_config
from tests.sim.test_config import composed


def model(name: str, lora_rank: int = 0) -> ModelConfig:
    return load_config(composed(f"model={name}", f"model.lora_rank={lora_rank}")).model


def hardware(name: str) -> HardwareConfig:
    return load_config(composed(f"hardware={name}")).hardware


# Non-embedding parameter counts from the paper's throughput table (billions).
@pytest.mark.parametrize("name,rank,paper", [
    ("gemma2b_vanilla", 0, 1.99), ("gemma2b_r2", 0, 0.99), ("gemma2b_r2", 64, 1.07),
    ("gemma2b_r2", 128, 1.15), ("gemma2b_r2", 256, 1.30), ("gemma2b_r2", 512, 1.60)])
def test_parameter_counts_match_paper(name, rank, paper):
    assert non_embedding_params(model(name, lora_rank=rank)) / 1e9 == pytest.approx(paper, abs=0.011)


def load(tokens=1, loops=1, context=0, heads=0, **kw) -> StepLoad:
    base = dict(tokens=tokens, distinct_loops=loops, context=context, entering=0, entering_context=0,
                exiting=0, exiting_context=0, heads=heads, kv_proj_layers=0, prefill=[])
    return StepLoad(**{**base, **kw})


def test_small_batch_is_bandwidth_bound_large_batch_compute_bound():
    cfg = RooflineCostConfig(bandwidth_efficiency=1.0, flops_efficiency=1.0, step_overhead_s=0.0)
    m, hw = model("gemma2b_r2"), hardware("a100_40g")
    cost = RooflineCost(cfg, hw, m)
    block_bytes = non_embedding_params(m) * m.dtype_bytes
    assert cost.step_time(load(tokens=1)) == pytest.approx(block_bytes / 1555e9, rel=1e-3)
    big = 100_000
    assert cost.step_time(load(tokens=big)) == pytest.approx(2 * non_embedding_params(m) * big / 312e12, rel=1e-3)


def test_each_ingredient_adds_time():
    cost = RooflineCost(RooflineCostConfig(), hardware("a100_40g"), model("gemma2b_r2", lora_rank=64))
    base = cost.step_time(load(tokens=8, context=8 * 512))
    assert cost.step_time(load(tokens=8, loops=2, context=8 * 512)) > base  # a second LoRA
    assert cost.step_time(load(tokens=8, context=8 * 2048)) > base  # longer contexts
    assert cost.step_time(load(tokens=8, context=8 * 512, heads=8)) > base  # exit heads
    assert cost.step_time(load(tokens=8, context=8 * 512, kv_proj_layers=9)) > base  # propagate
    assert cost.step_time(load(tokens=8, context=8 * 512, prefill=[512])) > base


def test_kv_sharing_keeps_one_loop_of_kv():
    m = model("gemma2b_r2")
    assert kv_bytes_per_token(m, "share") * 2 == kv_bytes_per_token(m, "ignore")
    # Gemma's multi-query attention: 1 KV head of 256, bf16, 18 layer-passes per token.
    assert kv_bytes_per_token(m, "ignore") == 18 * 2 * 256 * 2


def test_memory_capacity_and_reservation():
    mem = KVMemory(model("gemma2b_vanilla"), hardware("a100_40g"), MemoryConfig(), "ignore")
    per_request = mem.request_bytes(512, 2048)
    assert mem.capacity == pytest.approx(36e9 - mem.weights)
    n = int(mem.capacity // per_request)
    for _ in range(n):
        assert mem.fits(per_request)
        mem.reserve(per_request)
    assert not mem.fits(per_request)
    mem.release(per_request)
    assert mem.fits(per_request) and mem.peak == n * per_request
