"""kv_policy=propagate (CALM): an exiting token runs the K/V projections of every layer
it skipped, so deeper loops see it, at the cost of those projections."""

from __future__ import annotations

import numpy as np

from sim.kv.base import KVPolicy
from sim.registry import kv_registry


@kv_registry.register("propagate", order=1, color="#D55E00", real=True)
class PropagateKV(KVPolicy):
    """K/V projections of every skipped layer for the exiting token (CALM)."""

    acts_on_early_exit = True

    def projection_layers(self, skipped_loops: np.ndarray, layers_per_block: int) -> int:
        return int(skipped_loops.sum()) * layers_per_block
