"""The profile grid times the steps cost=profiled must price: depthwise_spec-shaped steps
(several rows per slot, drafting heads) and, under propagate, early exits' K/V projections."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from .test_executor import LOOPS, VOCAB  # noqa: E402


@pytest.fixture(scope="module")
def packed():
    from traces.recursive import RecursiveSpec, convert
    from traces.serving.weights import PackedModel

    from .conftest import tiny_model
    return PackedModel(convert(tiny_model(vocab=VOCAB), RecursiveSpec(LOOPS, 1, 1, "average", 4)).eval(),
                       torch.float32)


@pytest.mark.parametrize("kv_policy", ["ignore", "propagate"])
def test_grid_has_spec_steps_and_prices_propagation(packed, kv_policy):
    from sim.cost_profiled import LOAD_COLUMNS
    from traces.profile_steps import StepProfiler
    prof = StepProfiler(packed, packed.layout(), kv_policy, points=24, seed=1)
    def drafting(b):
        return b.drafting if b.drafting is not None else np.zeros(b.slots.size, dtype=bool)

    spec = [b for _, b, _, _ in prof.pts if drafting(b).any()]
    assert spec and any(np.unique(b.slots).size < b.slots.size for b in spec)  # several rows of a slot
    for load, b, _, _ in prof.pts:  # the load counts what the runner runs
        heads = b.leaving | drafting(b)
        assert load.tokens == b.slots.size and load.heads >= heads.sum()
        assert load.distinct_loops == np.unique(b.loops).size
        if drafting(b).any():
            assert load.heads == heads.sum()
    proj = sum(load.kv_proj_layers for load, *_ in prof.pts)
    assert (proj > 0) == (kv_policy == "propagate")
    prof.run_pass()
    rows, stats = prof.result()
    assert len(rows) == 24 and all(r[-1] > 0 for r in rows) and len(rows[0]) == len(LOAD_COLUMNS) + 1
