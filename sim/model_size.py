"""Parameter and KV-cache byte counts of a model config, shared by cost and memory.

Counts follow a Llama/Gemma-style decoder layer: Q and O projections of
n_heads*head_dim, K and V of n_kv_heads*head_dim, and a gated MLP (three
d_model x d_mlp matrices; two, up and down, when `gated_mlp` is False, as phi-2's).
Norms and biases are negligible and left out.
"""

from __future__ import annotations

from sim.config import ModelConfig


def linear_shapes(m: ModelConfig) -> list[tuple[int, int]]:
    q, kv = m.n_heads * m.head_dim, m.n_kv_heads * m.head_dim
    mlp = [(m.d_model, m.d_mlp)] * (2 if m.gated_mlp else 1) + [(m.d_mlp, m.d_model)]
    return [(m.d_model, q), (m.d_model, kv), (m.d_model, kv), (q, m.d_model), *mlp]


def layer_params(m: ModelConfig) -> int:
    return sum(i * o for i, o in linear_shapes(m))


def lora_params_per_loop(m: ModelConfig) -> int:
    """One loop's LoRA over the whole shared block: rank*(in+out) per linear layer, the
    rank capped at min(in, out) (beyond that a LoRA is a full matrix: the paper's
    rank-512 count of 1.60B for recursive Gemma needs this cap on the 256-wide K/V)."""
    per_layer = sum(min(m.lora_rank, i, o) * (i + o) for i, o in linear_shapes(m))
    return per_layer * m.layers_per_block


def embedding_params(m: ModelConfig) -> int:
    return m.vocab * m.d_model * (1 if m.tied_embeddings else 2)


def non_embedding_params(m: ModelConfig) -> int:
    """Unique layer weights plus all loops' LoRA: the paper's 'params (non-emb)'."""
    layers = m.prelude_layers + m.layers_per_block + m.coda_layers
    return layer_params(m) * layers + lora_params_per_loop(m) * m.loops


def weight_bytes(m: ModelConfig) -> int:
    return (non_embedding_params(m) + embedding_params(m)) * m.dtype_bytes


def kv_bytes_per_token_layer(m: ModelConfig) -> int:
    return 2 * m.n_kv_heads * m.head_dim * m.dtype_bytes


def kv_bytes_per_token(m: ModelConfig, kv_policy) -> int:
    """KV bytes one token holds: the unique layers' and, of the shared block, as many
    loops' as the KV policy keeps (a name or a `sim.kv_policy.KVPolicy`)."""
    from sim.kv_policy import kv_policy as as_kv_policy

    kv_loops = as_kv_policy(kv_policy).kv_loops(m.loops)
    layers = m.prelude_layers + m.coda_layers + m.layers_per_block * kv_loops
    return layers * kv_bytes_per_token_layer(m)
