"""A `RecursiveLM` rearranged for serving.

Why a second layout of the same weights: a step applies the shared block once to rows of
several loops, so the block's dense weights are fused where their inputs coincide (q|k|v,
gate|up: one matmul each), each loop's LoRA is fused the same way (A stacked, B block
diagonal: two matmuls per fused linear), the per-loop norms are stacked so a step gathers
every layer's rows at once, and RoPE's cos/sin are a table indexed by position.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..recursive import RecursiveLM

ROPE_TABLE = 4096  # positions precomputed up front; longer sequences grow the table once


@dataclass
class Dense:
    """One decoder layer's linear weights, fused where inputs coincide."""
    qkv: torch.Tensor  # (q + 2 kv, d)
    o: torch.Tensor
    gate_up: torch.Tensor  # (2 mlp, d)
    down: torch.Tensor


@dataclass
class LoRA:
    """One loop's LoRA on one block layer, fused like `Dense` (A stacked, B block diagonal)."""
    a_qkv: torch.Tensor
    b_qkv: torch.Tensor
    a_o: torch.Tensor
    b_o: torch.Tensor
    a_gu: torch.Tensor
    b_gu: torch.Tensor
    a_down: torch.Tensor
    b_down: torch.Tensor

    @property
    def rank(self) -> int:
        return int(self.a_o.shape[0])


@dataclass
class EdgeLayer:
    """A unique prelude or coda layer: its weights and its own norms."""
    w: Dense
    norm_in: torch.Tensor
    norm_post: torch.Tensor


class PackedModel:
    """Serving weights in the compute dtype on one device."""

    def __init__(self, model: RecursiveLM, dtype=torch.bfloat16, device="cpu"):
        d = model.dims
        self.dims, self.dtype, self.device = d, dtype, torch.device(device)
        spec = model.spec
        self.loops = spec.num_loops if spec else 1
        self.prelude_n = spec.prelude_layers if spec else 0
        self.coda_n = spec.coda_layers if spec else 0
        n_apps = len(model.apps)
        self.block_n = (n_apps - self.prelude_n - self.coda_n) // self.loops
        to = dict(dtype=dtype, device=self.device)

        def t(x):
            return x.detach().to(**to).contiguous()

        def dense(core) -> Dense:
            w = core.w
            return Dense(t(torch.cat([w["q"], w["k"], w["v"]])), t(w["o"]), t(torch.cat([w["gate"], w["up"]])),
                         t(w["down"]))

        def edge(app) -> EdgeLayer:
            return EdgeLayer(dense(model.cores[app.core]), t(app.norm_in), t(app.norm_post))

        apps = list(model.apps)
        block = apps[self.prelude_n:n_apps - self.coda_n]
        self.prelude = [edge(a) for a in apps[:self.prelude_n]]
        self.coda = [edge(a) for a in apps[n_apps - self.coda_n:]]
        K, N = self.block_n, self.loops
        self.block = [dense(model.cores[block[j].core]) for j in range(K)]  # shared across loops
        # (K, loops, d): a row of loop k at block position j uses [j, k-1]
        self.norm_in = t(torch.stack([torch.stack([block[k * K + j].norm_in for k in range(N)]) for j in range(K)]))
        self.norm_post = t(torch.stack([torch.stack([block[k * K + j].norm_post for k in range(N)])
                                        for j in range(K)]))
        self.lora: list[list[LoRA | None]] = []  # [loop][j]
        for k in range(N):
            row = []
            for j in range(K):
                lo = block[k * K + j].loras
                if len(lo) == 0:
                    row.append(None)
                    continue
                A = {n: lo[n].A.detach() for n in lo}
                B = {n: lo[n].B.detach() for n in lo}
                row.append(LoRA(t(torch.cat([A["q"], A["k"], A["v"]])), t(torch.block_diag(B["q"], B["k"], B["v"])),
                                t(A["o"]), t(B["o"]), t(torch.cat([A["gate"], A["up"]])),
                                t(torch.block_diag(B["gate"], B["up"])), t(A["down"]), t(B["down"])))
            self.lora.append(row)
        self.embed = t(model.embed)
        self.final_norm = t(model.final_norm)
        self.q_width = d.heads * d.head_dim
        self.kv_width = d.kv_heads * d.head_dim
        first = self.block[0] if K else self.prelude[0].w
        self.mlp = first.gate_up.shape[0] // 2
        self.inv_freq = 1.0 / (d.rope_theta ** (torch.arange(0, d.head_dim, 2, dtype=torch.float32,
                                                             device=self.device) / d.head_dim))
        self._rope_table(ROPE_TABLE)

    def _rope_table(self, n: int) -> None:
        """cos and a sign-folded sin, (n, head_dim): rotating half the vector is then one roll
        (`layer.rope`). Computed in fp32 and cast, as `llama.rope_tables` does per call."""
        f = torch.arange(n, device=self.device, dtype=torch.float32)[:, None] * self.inv_freq
        emb = torch.cat([f, f], dim=-1)
        h = emb.shape[-1] // 2
        sin = emb.sin()
        self.cos = emb.cos().to(self.dtype)
        self.sin = torch.cat([-sin[:, :h], sin[:, h:]], dim=-1).to(self.dtype)

    def ensure_positions(self, n: int) -> None:
        """Make the RoPE table cover positions < n (called once per run, not per step)."""
        if n > self.cos.shape[0]:
            self._rope_table(max(n, 2 * self.cos.shape[0]))

    def layout(self) -> dict:
        """What a profile must match to be used for this model (sim.cost_profiled)."""
        d = self.dims
        lo = self.lora[0][0] if self.lora and self.lora[0] else None
        return {"loops": self.loops, "layers_per_block": self.block_n, "prelude_layers": self.prelude_n,
                "coda_layers": self.coda_n, "d_model": d.hidden, "n_heads": d.heads, "n_kv_heads": d.kv_heads,
                "head_dim": d.head_dim, "d_mlp": self.mlp, "vocab": d.vocab,
                "lora_rank": lo.rank if lo is not None else 0}

    def weight_bytes(self) -> int:
        """Bytes one full-depth decode step must read at least: every distinct weight once."""
        ts = [self.embed, self.final_norm, self.norm_in, self.norm_post]
        for layer in self.prelude + self.coda:
            ts += [layer.w.qkv, layer.w.o, layer.w.gate_up, layer.w.down, layer.norm_in, layer.norm_post]
        for w in self.block:
            ts += [w.qkv, w.o, w.gate_up, w.down]
        for row in self.lora:
            for lo in row:
                if lo is not None:
                    ts += [getattr(lo, f) for f in LoRA.__dataclass_fields__]
        return int(sum(x.numel() * x.element_size() for x in ts))
