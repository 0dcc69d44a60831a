"""cost=layer_step against closed forms: layers run per step, adapters by parameter count, prefill passes."""

import pytest

from sim.cost import make_cost_model
from sim.cost.layer_step import LayerStepCost, LayerStepCostConfig
from sim.simulation import simulate
from sim.validate import load_config
from tests.sim.helpers import analytic_config, make_trace
from tests.sim.test_config import composed
from tests.sim.test_cost_memory import load, model

CFG = LayerStepCostConfig(layer_s=1e-3)
# Gemma 2B layer: Q, O 2048x2048; K, V 2048x256; gated MLP 3 x 2048x16384.
GEMMA_LAYER = 2 * 2048 * 2048 + 2 * 2048 * 256 + 3 * 2048 * 16384
GEMMA_LORA64 = 64 * ((2048 + 2048) * 2 + (2048 + 256) * 2 + 3 * (2048 + 16384))  # rank x (in + out)


def test_a_step_costs_its_block_layers_whatever_the_tokens():
    cost = LayerStepCost(CFG, None, model("gemma2b_r2"))
    assert cost.step_time(load(tokens=1)) == pytest.approx(9e-3)
    assert cost.step_time(load(tokens=500, context=500 * 2048)) == pytest.approx(9e-3)


def test_adapters_priced_by_parameter_count_per_distinct_loop():
    cost = LayerStepCost(CFG, None, model("gemma2b_r2", lora_rank=64))
    share = GEMMA_LORA64 / GEMMA_LAYER
    assert cost.step_time(load(tokens=8, loops=1)) == pytest.approx(9e-3 * (1 + share))
    assert cost.step_time(load(tokens=8, loops=2)) == pytest.approx(9e-3 * (1 + 2 * share))


def test_prelude_coda_head_prefill_and_overhead_terms():
    cfg = LayerStepCostConfig(layer_s=1e-3, head_s=5e-3, prefill_s=2e-3, step_overhead_s=1e-4)
    m = model("smollm2_135m_r2_mc")  # 1 prelude + 2 x 14 + 1 coda, LoRA rank 0
    cost = make_cost_model(cfg, load_config(composed()).hardware, m)
    base = 1e-4 + 14e-3
    assert cost.step_time(load()) == pytest.approx(base)
    assert cost.step_time(load(entering=3)) == pytest.approx(base + 1e-3)
    assert cost.step_time(load(entering=3, exiting=2)) == pytest.approx(base + 2e-3)
    assert cost.step_time(load(heads=7)) == pytest.approx(base + 5e-3)
    # a prefill pass over all 30 layers, plus prefill_s per admitted request
    assert cost.step_time(load(prefill=[10, 20])) == pytest.approx(base + 30e-3 + 2 * 2e-3)


def test_simulated_makespan_matches_closed_form():
    """Continuous batching, 4 requests of 5 tokens resident at once, 2 loops of 10 layers:
    5 iterations x 2 loop steps x 10 layers, plus one prefill pass of 20 layers."""
    cfg = analytic_config("continuous", batch_size=4, num_loops=2)
    cfg.cost, cfg.model.lora_rank = LayerStepCostConfig(layer_s=1e-3), 0
    metrics = simulate(cfg, trace=make_trace([[1, 2, 1, 2, 2]] * 4, num_loops=2)).metrics
    assert metrics["makespan_s"] == pytest.approx(5 * 2 * 10e-3 + 20e-3)


def test_layer_s_must_be_positive():
    from sim.errors import ConfigError

    with pytest.raises(ConfigError, match="cost.layer_s"):
        load_config(composed("cost=layer_step", "cost.layer_s=0"))


def test_layer_step_is_registered_with_its_own_keys():
    """The registry finds sim/cost/layer_step.py; roofline's keys are refused under layer_step."""
    from hydra.errors import HydraException

    from sim.registry import cost_registry

    assert "layer_step" in cost_registry.names()
    cfg = load_config(composed("cost=layer_step", "cost.layer_s=0.002"))
    assert isinstance(cfg.cost, LayerStepCostConfig) and cfg.cost.layer_s == 0.002
    with pytest.raises(HydraException, match="bandwidth_efficiency"):
        load_config(composed("cost=layer_step", "cost.bandwidth_efficiency=0.5"))
