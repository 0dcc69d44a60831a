"""Each KV policy's four answers, for 3 loops: what SlotState applies without knowing names."""

import numpy as np
import pytest

from sim.kv import KVPolicy, kv_policy
from sim.registry import kv_registry


def test_the_four_policies_are_registered_in_order():
    assert kv_registry.names() == ("ignore", "propagate", "recompute", "share")
    assert all(isinstance(kv_policy(n), KVPolicy) and kv_policy(n).name == n for n in kv_registry.names())


def test_context_gain_only_ignore_leaves_deeper_loops_short():
    # row e: an exit at loop e; columns 0 (unique layers) .. 3 (last loop), 4 (past the last)
    assert kv_policy("ignore").context_gain(3).tolist() == [
        [1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]
    for name in ("propagate", "recompute", "share"):
        assert kv_policy(name).context_gain(3).tolist() == [[1, 1, 1, 1, 0]] * 4


def test_only_recompute_owes_fills_for_the_skipped_loops():
    assert kv_policy("recompute").fills_owed(3).tolist() == [
        [0, 1, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]]
    assert all(kv_policy(n).fills_owed(3) is None for n in ("ignore", "propagate", "share"))


@pytest.mark.parametrize("name,layers", [("propagate", (2 + 1) * 4), ("recompute", 0), ("ignore", 0), ("share", 0)])
def test_projection_layers(name, layers):
    assert kv_policy(name).projection_layers(np.array([2, 1]), layers_per_block=4) == layers
    assert kv_policy(name).acts_on_early_exit == (name in ("propagate", "recompute"))


def test_only_share_keeps_one_loop_of_kv():
    assert [kv_policy(n).kv_loops(3) for n in kv_registry.names()] == [3, 3, 3, 1]
