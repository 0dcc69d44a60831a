"""kv_policy=recompute (FREE): the loops an exited token skipped run later, batched with
the request's next token at that loop, so their KV exists when it is read."""

from __future__ import annotations

import numpy as np

from sim.kv.base import KVPolicy
from sim.registry import kv_registry


@kv_registry.register("recompute", order=2, color="#CC79A7")
class RecomputeKV(KVPolicy):
    """Skipped loops run later, batched with the request's next token at that loop (FREE)."""

    acts_on_early_exit = True

    def fills_owed(self, loops: int) -> np.ndarray:
        cols = np.arange(loops + 2)
        return ((cols[None, :] > np.arange(loops + 1)[:, None]) & (cols[None, :] <= loops)).astype(np.int64)
