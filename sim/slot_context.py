"""KV accounting per slot: how much context each loop of a slot's next token attends to,
and which KV fills exited tokens still owe.

Which loops an emitted token adds KV to, and what an early exit owes, are its KV
policy's answers (sim/kv_policy.py); this class holds the per-slot arrays and applies
them, knowing no policy by name. Memory (bytes reserved per request) is the request
queue's; this is about attention work.
"""

from __future__ import annotations

import numpy as np

from sim.kv_policy import KVPolicy, kv_policy as as_kv_policy


class SlotContext:
    def __init__(self, policy: str | KVPolicy, batch_size: int, n_loops: int, layers_per_block: int):
        self.policy = as_kv_policy(policy)
        self.n_loops = n_loops
        self.layers_per_block = layers_per_block
        # ctx[s, k]: positions the slot's token attends to at loop k (itself included);
        # column 0 counts every position (what unique prelude/coda layers see). Which loops
        # an emitted token adds to is the KV policy's answer (row e: an exit at loop e).
        self.ctx = np.zeros((batch_size, n_loops + 2), dtype=np.int64)
        self.gain = self.policy.context_gain(n_loops)
        # KV fills owed per loop by exited tokens, paid when the slot's next token runs that
        # loop (kv_policy=recompute: FREE's synchronized parallel decoding).
        self.owed_gain = self.policy.fills_owed(n_loops)
        self.owed = np.zeros((batch_size, n_loops + 2), dtype=np.int64) if self.owed_gain is not None else None

    def place(self, slot: int, prompt_len: int) -> None:
        """A new request's first token attends to its prompt and itself at every loop."""
        self.ctx[slot] = prompt_len + 1

    def pay_fills(self, idx: np.ndarray, loops: np.ndarray, ctx: np.ndarray) -> tuple[int, int]:
        """The fills owed at the loops the slots run now, batched with their tokens:
        (fills, context they attend to). Paid once."""
        if self.owed is None:
            return 0, 0
        fills = self.owed[idx, loops]
        nf = int(fills.sum())
        if not nf:
            return 0, 0
        self.owed[idx, loops] = 0
        return nf, int(fills @ ctx)

    def exited_early(self, slots: np.ndarray, exit_at: np.ndarray) -> int:
        """Tokens of `slots` left at `exit_at` < N while later tokens will want their deeper
        KV: record the fills owed, return the K/V projection layers run now."""
        if self.owed is not None:
            self.owed[slots] += self.owed_gain[exit_at]
        return self.policy.projection_layers(self.n_loops - exit_at, self.layers_per_block)

    def emitted(self, slots: np.ndarray, exit_at: np.ndarray) -> None:
        """The slots' tokens, emitted after exiting at `exit_at`, join their next token's context."""
        self.ctx[slots] += self.gain[exit_at]

    def vacate(self, slots: np.ndarray) -> None:
        if self.owed is not None:
            self.owed[slots] = 0
