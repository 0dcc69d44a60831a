"""KV policies: what a token that exits early does about the KV of the loops it skipped.

A later token that reaches a deeper loop attends to the KV every earlier token left
at that loop. An exited token left none there; each policy answers that gap in its
own way, and a policy is four small answers the rest of the simulator asks for:

- `kv_loops`: how many loops' KV a token holds (memory per token);
- `context_gain`: which loops' attended context grows by one once a token exiting at
  loop e is emitted (the slot's next token attends to it there);
- `fills_owed`: loops whose KV must be computed later, batched with the request's next
  token at that loop (None: nothing is ever owed);
- `projection_layers`: layer-level K/V projections run at once for the skipped loops.

`SlotState` holds the arrays and applies these answers; it knows no policy by name.
Each policy is one module of `sim/kv/`, registered in `sim.registry.kv_registry`; its
metadata `real=True` says the real backend (traces/serving/) runs it too.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from sim.registry import kv_registry


class KVPolicy:
    name: ClassVar[str]  # set by the registry
    # True: the policy acts when a token exits before the last loop (fills or projections).
    acts_on_early_exit: ClassVar[bool] = False

    def kv_loops(self, loops: int) -> int:
        """Loops whose KV a token keeps in memory."""
        return loops

    def context_gain(self, loops: int) -> np.ndarray:
        """(loops + 1, loops + 2) int64: row e, column k is 1 when an exit at loop e leaves KV
        that loop k attends to (column 0: unique prelude/coda layers, always filled). Every
        loop is filled or shared unless the policy ignores the gap."""
        cols = np.arange(loops + 2)
        return np.repeat((cols <= loops)[None, :], loops + 1, axis=0).astype(np.int64)

    def fills_owed(self, loops: int) -> np.ndarray | None:
        """(loops + 1, loops + 2) int64: row e marks the loops an exit at e owes a KV fill
        for; None when the policy never owes fills."""
        return None

    def projection_layers(self, skipped_loops: np.ndarray, layers_per_block: int) -> int:
        """K/V projections (in layers) run for tokens that just exited early, skipping
        `skipped_loops` loops each."""
        return 0


def real_kv_policies() -> tuple[str, ...]:
    """The policies the real backend runs (registry metadata `real`)."""
    return tuple(e.name for e in kv_registry.entries() if e.meta.get("real"))


def kv_policy(name: str | KVPolicy) -> KVPolicy:
    """The policy object for a name (ConfigError listing the valid names if unknown)."""
    if isinstance(name, KVPolicy):
        return name
    return kv_registry.get(name).impl()
