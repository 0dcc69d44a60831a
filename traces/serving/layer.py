"""The one decoder layer of the serving path: prefill and decode both run `decoder_layer`.

Why one function over any leading shape: prefill runs it on (prompts, positions, d), decode
on (rows, d); the only thing that differs is how attention reaches the KV cache, which the
caller passes in as `attend`. Per-loop LoRA comes as `Segments`: rows are sorted by loop, so
each loop's delta is two matmuls over one contiguous slice of rows, and the shared weights
are applied once to all of them (the point of depth-wise batching).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..llama import rms_norm
from .weights import Dense, LoRA


@dataclass
class Segments:
    """Per-loop LoRA over rows sorted by loop: rows [start, stop) take `lora[j]` of their loop."""
    bounds: list[tuple[int, int, list[LoRA | None]]]  # (start, stop, that loop's LoRA per block position)

    def at(self, j: int) -> list[tuple[int, int, LoRA]]:
        return [(a, b, lo[j]) for a, b, lo in self.bounds if lo[j] is not None]


def project(x: torch.Tensor, w: torch.Tensor, lora: list[tuple[int, int, LoRA]], kind: str) -> torch.Tensor:
    """x @ w.T plus each row segment's own low-rank delta."""
    y = F.linear(x, w)
    for a, b, lo in lora:
        xs = x if a == 0 and b == x.shape[0] else x[a:b]
        d = F.linear(F.linear(xs, getattr(lo, f"a_{kind}")), getattr(lo, f"b_{kind}"))
        if xs is x:
            y += d
        else:
            y[a:b] += d
    return y


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding with the sign-folded sin table of `PackedModel` (rotate-half = roll)."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin


Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def decoder_layer(x: torch.Tensor, w: Dense, norm_in: torch.Tensor, norm_post: torch.Tensor,
                  lora: list[tuple[int, int, LoRA]], cos: torch.Tensor, sin: torch.Tensor, attend: Attend,
                  dims, q_width: int, kv_width: int) -> torch.Tensor:
    """One pre-norm Llama layer. `attend(q, k, v)` (roped q and k, heads split) writes the KV
    cache as its policy says and returns attention output (..., heads * head_dim)."""
    h = rms_norm(x, norm_in, dims.eps)
    q, k, v = project(h, w.qkv, lora, "qkv").split([q_width, kv_width, kv_width], dim=-1)
    q = rope(q.unflatten(-1, (dims.heads, dims.head_dim)), cos, sin)
    k = rope(k.unflatten(-1, (dims.kv_heads, dims.head_dim)), cos, sin)
    a = attend(q, k, v.unflatten(-1, (dims.kv_heads, dims.head_dim)))
    x = x + project(a, w.o, lora, "o")
    g, u = project(rms_norm(x, norm_post, dims.eps), w.gate_up, lora, "gu").chunk(2, dim=-1)
    return x + project(F.silu(g) * u, w.down, lora, "down")


def kv_projection(h: torch.Tensor, w: Dense, lora: LoRA | None, cos, sin, dims, q_width: int,
                  kv_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K (roped) and V of an already normed input through one layer's own K/V weights only:
    what kv_policy=propagate writes for the loops an exiting token skips (CALM)."""
    kv = F.linear(h, w.qkv[q_width:])
    if lora is not None:
        r = lora.a_o.shape[0]  # the fused A stacks q, k, v blocks of the same rank
        kv = kv + F.linear(F.linear(h, lora.a_qkv[r:]), lora.b_qkv[q_width:, r:])
    k, v = kv.split([kv_width, kv_width], dim=-1)
    return (rope(k.unflatten(-1, (dims.kv_heads, dims.head_dim)), cos, sin),
            v.unflatten(-1, (dims.kv_heads, dims.head_dim)))
