"""The per-request memory overhead, and the paper setting's budget against Table K.1."""

import pytest

from sim.config import MemoryConfig
from sim.memory import KVMemory
from sim.validate import load_config
from tests.sim.test_config import composed
from tests.sim.test_cost_memory import hardware, model


def test_overhead_is_reserved_with_the_kv():
    m, hw = model("gemma2b_vanilla"), hardware("a100_40g")
    plain = KVMemory(m, hw, MemoryConfig(), "ignore")
    extra = KVMemory(m, hw, MemoryConfig(request_overhead_mb=100.0), "ignore")
    assert extra.request_bytes(512, 2048) == plain.request_bytes(512, 2048) + 100_000_000
    assert plain.request_bytes(512, 2048) == 2560 * 18 * 2 * 256 * 2  # Gemma MQA: 18 KB per token
    assert extra.max_resident(512, 2048) == int(plain.capacity // (plain.request_bytes(512, 2048) + 1e8))


@pytest.mark.parametrize("name,batch", [("gemma2b_vanilla", 111), ("gemma2b_r2", 123)])
def test_paper_budget_gives_table_k1_batches(name, batch):
    """conf/paper/gemma_a100.yaml derives its budget from these two K.1 batches at full length."""
    cfg = load_config(composed("+paper=gemma_a100", f"model={name}"))
    assert KVMemory(cfg.model, cfg.hardware, cfg.memory, "ignore").max_resident(512, 2048) == batch


def test_negative_overhead_is_refused():
    from sim.errors import ConfigError

    with pytest.raises(ConfigError, match="memory.request_overhead_mb"):
        load_config(composed("memory.request_overhead_mb=-1"))
