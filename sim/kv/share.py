"""kv_policy=share (recursive KV sharing): every loop reuses loop 1's KV, so a token holds
one loop of KV memory and no loop's KV is ever missing."""

from __future__ import annotations

from sim.kv.base import KVPolicy
from sim.registry import kv_registry


@kv_registry.register("share", order=3, color="#009E73", real=True)
class ShareKV(KVPolicy):
    """Every loop reuses loop 1's KV (recursive KV sharing): one loop of KV memory."""

    def kv_loops(self, loops: int) -> int:
        return 1
