"""kv_policy=ignore: an exited token leaves no KV at the loops it skipped, and deeper
loops attend only to tokens that reached them: no compute, some context lost."""

from __future__ import annotations

import numpy as np

from sim.kv.base import KVPolicy
from sim.registry import kv_registry


@kv_registry.register("ignore", order=0, color="#999999", real=True)
class IgnoreKV(KVPolicy):
    """No compute: deeper loops attend only to tokens that reached them."""

    def context_gain(self, loops: int) -> np.ndarray:
        cols = np.arange(loops + 2)
        return (cols[None, :] <= np.arange(loops + 1)[:, None]).astype(np.int64)
