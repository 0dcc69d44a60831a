"""A small, explicit Llama-family forward (RMSNorm, RoPE, GQA, SwiGLU).

Why our own forward instead of patching Hugging Face modules: a recursive
model runs the same weights several times with a different KV cache, norm and
LoRA per loop, and needs logits after every loop. With plain functions over
weight tensors that is a loop over a list; with HF modules it is a fight with
their cache and layer-index bookkeeping. Weights come from an HF Llama model
(see ``recursive.from_hf``); ``tests/traces`` checks the two forwards agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LlamaDims:
    """The few config numbers the forward needs."""
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    rope_theta: float
    eps: float
    vocab: int

    @classmethod
    def from_hf_config(cls, cfg) -> "LlamaDims":
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        theta = getattr(cfg, "rope_theta", None)
        rp = getattr(cfg, "rope_parameters", None) or {}
        if theta is None:
            theta = rp.get("rope_theta", 10000.0)
        rtype = rp.get("rope_type", "default") if isinstance(rp, dict) else "default"
        if rtype not in ("default", None):
            raise NotImplementedError(f"rope_type {rtype!r} not supported")
        return cls(hidden=cfg.hidden_size, heads=cfg.num_attention_heads,
                   kv_heads=cfg.num_key_value_heads, head_dim=head_dim,
                   rope_theta=float(theta), eps=float(cfg.rms_norm_eps),
                   vocab=cfg.vocab_size)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm computed in fp32 like HF Llama, cast back to the input dtype."""
    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype):
    """cos, sin of shape (B, 1, T, head_dim) for integer positions (B, T)."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device,
                                        dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv  # (B, T, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin):
    return x * cos + _rotate_half(x) * sin


def attention(h, lin, dims: LlamaDims, cos, sin, cache: dict | None, mask):
    """GQA self-attention. ``lin(name, x)`` applies projection ``name``.

    cache: a dict holding this layer's growable KV buffer (see
    _cache_append); updated in place. mask: None for plain causal attention without a cache, else a
    boolean (B, 1, T, T_past + T) 'may attend' mask.
    """
    B, T, _ = h.shape
    q = lin("q", h).view(B, T, dims.heads, dims.head_dim).transpose(1, 2)
    k = lin("k", h).view(B, T, dims.kv_heads, dims.head_dim).transpose(1, 2)
    v = lin("v", h).view(B, T, dims.kv_heads, dims.head_dim).transpose(1, 2)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    if cache is not None:
        k, v = _cache_append(cache, k, v)
    if mask is None:
        gqa = {"enable_gqa": True} if dims.heads > dims.kv_heads else {}
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa)
    else:
        out = masked_attention(q, k, v, mask)
    return lin("o", out.transpose(1, 2).reshape(B, T, dims.heads * dims.head_dim))


def masked_attention(q, k, v, mask):
    """Grouped-query attention under a boolean (B, 1, T, Tk) mask, as two matmuls.

    Why not SDPA: torch's CPU kernel with a mask is 6-8x slower than this for the
    decode steps of text sampling and recording (one query per row over a few hundred
    keys; measured in bf16 at batch 64), and was a third of a decode step's time. The
    scores are fp32 (bf16 scores would round logits by ~0.1), as in SDPA.
    Query head h reads key/value head h // (H / KV), as in HF's repeat_interleave.
    """
    B, H, T, D = q.shape
    kv = k.shape[1]
    rep = H // kv
    s = torch.matmul(q.float().reshape(B, kv, rep * T, D), k.float().transpose(-1, -2))
    s = s.view(B, kv, rep, T, -1).mul_(D ** -0.5).masked_fill_(~mask[:, :, None], float("-inf"))
    p = s.softmax(-1).to(q.dtype).view(B, kv, rep * T, -1)
    return torch.matmul(p, v).view(B, H, T, D)


def _cache_append(cache: dict, k, v):
    """Append to a growable KV buffer (amortised doubling, no per-step copy
    of the whole cache); return views of the filled part."""
    n = cache.get("len", 0)
    T = k.shape[2]
    buf = cache.get("kbuf")
    if buf is None or n + T > buf.shape[2]:
        cap = max(2 * (n + T), 64)
        kb = k.new_empty(k.shape[0], k.shape[1], cap, k.shape[3])
        vb = v.new_empty(kb.shape)
        if n:
            kb[:, :, :n] = cache["kbuf"][:, :, :n]
            vb[:, :, :n] = cache["vbuf"][:, :, :n]
        cache["kbuf"], cache["vbuf"] = kb, vb
    cache["kbuf"][:, :, n:n + T] = k
    cache["vbuf"][:, :, n:n + T] = v
    cache["len"] = n + T
    return cache["kbuf"][:, :, :n + T], cache["vbuf"][:, :, :n + T]


def mlp(h, lin):
    return lin("down", F.silu(lin("gate", h)) * lin("up", h))


def decoder_layer(x, lin, norm_in, norm_post, dims, cos, sin, cache, mask):
    """One pre-norm Llama decoder layer."""
    x = x + attention(rms_norm(x, norm_in, dims.eps), lin, dims, cos, sin, cache, mask)
    return x + mlp(rms_norm(x, norm_post, dims.eps), lin)


def build_mask(key_valid: torch.Tensor, q_len: int) -> torch.Tensor:
    """Boolean (B, 1, q_len, Tk) mask for the last q_len queries over Tk keys.

    key_valid (B, Tk) marks real (non-padding) tokens in cache order. Each
    query may see valid keys at or before its own slot, and always itself, so
    padded rows never become all-masked (which would make NaNs that leak into
    other rows through 0 * NaN).
    """
    B, Tk = key_valid.shape
    qi = torch.arange(Tk - q_len, Tk, device=key_valid.device)[:, None]
    ki = torch.arange(Tk, device=key_valid.device)[None, :]
    causal = ki <= qi
    m = causal[None] & key_valid[:, None, :]
    m = m | (ki == qi)[None]
    return m[:, None]
