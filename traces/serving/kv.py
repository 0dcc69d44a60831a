"""The serving KV cache: one `LoopKV` per layer, holding that layer's K and V at every loop.

Layout (loop, slot, kv_head, position, head_dim) in one tensor per K and V, so a step whose
rows sit at different loops reads all of theirs with one gather. A slot's positions are
absolute sequence positions (prompt first). Which (loop, position) entries hold KV is a
separate boolean `valid` (kv_policy=ignore: a token that exited at loop e left none deeper).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sim.errors import ConfigError
from sim.registry import kv_registry

# The KV policies this executor runs. Until the KV registry marks them itself
# (meta={"real": True}, read first), this is the one place that says so.
_RUNS_FOR_REAL = ("ignore", "share", "propagate")


def real_kv_policies() -> tuple[str, ...]:
    """Names of the registered KV policies the real backend executes."""
    marked = tuple(e.name for e in kv_registry.entries() if e.meta.get("real"))
    if marked:
        return marked
    return tuple(n for n in _RUNS_FOR_REAL if n in kv_registry.names())


def check_kv_policy(name: str) -> None:
    runs = real_kv_policies()
    if name not in runs:
        raise ConfigError(f"exit.kv_policy={name!r} is not executed for real; the real backend runs "
                          f"{', '.join(runs)}")


@dataclass
class LoopKV:
    """K and V of one layer: (loops, slots, kv_heads, positions, head_dim)."""
    k: torch.Tensor
    v: torch.Tensor

    @classmethod
    def empty(cls, loops: int, slots: int, kv_heads: int, positions: int, head_dim: int, dtype, device) -> "LoopKV":
        shape = (loops, slots, kv_heads, positions, head_dim)
        return cls(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))

    def write(self, loop: torch.Tensor, slot: torch.Tensor, pos: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor) -> None:
        """One position per row: k, v (rows, kv_heads, head_dim) at (loop, slot, pos) of each row."""
        self.k[loop, slot, :, pos] = k
        self.v[loop, slot, :, pos] = v

    def read(self, loop: torch.Tensor, slot: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions [0, length) of each row's (loop, slot): (rows, kv_heads, length, head_dim)."""
        return self.k[loop, slot, :, :length], self.v[loop, slot, :, :length]

    def write_prefix(self, loop: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Prefill: k, v (prompts, kv_heads, P, head_dim) at positions [0, P) of `slots`."""
        P = k.shape[2]
        self.k[loop, slots, :, :P] = k
        self.v[loop, slots, :, :P] = v

    def read_prefix(self, loop: int, slots: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[loop, slots, :, :length], self.v[loop, slots, :, :length]
