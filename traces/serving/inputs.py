"""What a real run needs besides the engine: the model of a sim layout, and the tokens.

`serving_model` builds the recursive SmolLM2 whose layout a `sim` model config
names (or the vanilla one for loops=1 without LoRA). Timing needs no uptraining:
the converted model does the same work as an uptrained one, so by default the SVD
conversion is used and its weights are cached outside git (the conversion takes
~30 s on one core). `request_sequences` gives each workload request its prompt
ids followed by the trace's generated tokens (teacher forcing).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from sim.config import ModelConfig
from sim.errors import ConfigError, TraceError
from sim.trace import DEFAULT_TRACE, Trace
from sim.workload import Workload


def _check_dims(m: ModelConfig, hf) -> None:
    c = hf.config
    got = {"d_model": c.hidden_size, "n_heads": c.num_attention_heads, "n_kv_heads": c.num_key_value_heads,
           "d_mlp": c.intermediate_size, "vocab": c.vocab_size, "source_layers": c.num_hidden_layers}
    bad = [f"model.{k}={getattr(m, k)} (the base model has {v})" for k, v in got.items()
           if getattr(m, k) is not None and getattr(m, k) != v]
    if bad:
        raise ConfigError(f"model {m.name} does not match the base model: {', '.join(bad)}")


def serving_model(m: ModelConfig, checkpoint: str | None = None, source: str = "gguf"):
    """(RecursiveLM in fp32, tokenizer) of layout `m`; converted (cached) or from `checkpoint`."""
    import torch

    from ..base_model import cache_root, load_base
    from ..recursive import RecursiveSpec, convert, load_model, original_from_hf

    hf, tok = load_base(source)
    _check_dims(m, hf)
    L = hf.config.num_hidden_layers
    if m.loops == 1 and m.prelude_layers == 0 and m.coda_layers == 0 and m.lora_rank == 0:
        return original_from_hf(hf).eval(), tok
    spec = RecursiveSpec(m.loops, m.prelude_layers, m.coda_layers, "average", m.lora_rank)
    try:
        if spec.block_size(L) != m.layers_per_block:
            raise ValueError(f"{spec.describe(L)} is not {m.layers_per_block} layers per block")
    except ValueError as exc:
        raise ConfigError(f"model {m.name}: {exc}") from None
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise ConfigError(f"checkpoint {checkpoint}: no such file")
        model, ck = load_model(checkpoint, hf)
        got = RecursiveSpec.from_dict(ck["structure"]["spec"])
        if (got.num_loops, got.prelude_layers, got.coda_layers, got.lora_rank) != (spec.num_loops, spec.prelude_layers, spec.coda_layers, spec.lora_rank):
            raise ConfigError(f"checkpoint {checkpoint} has layout {got} but model {m.name} is {spec}")
        return model.eval(), tok
    key = json.dumps({"spec": spec.__dict__, "base": str(hf.config._name_or_path), "L": L}, sort_keys=True)
    path = cache_root() / "executor" / f"{m.name}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.pt"
    if path.exists():
        model = convert(hf, spec, svd=False)
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if [k for k in missing if k != "embed"] or unexpected:
            raise RuntimeError(f"{path}: stale converted weights ({missing[:3]} {unexpected[:3]}); delete it")
        return model.eval(), tok
    model = convert(hf, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({k: v for k, v in model.state_dict().items() if k != "embed"}, tmp)
    tmp.replace(path)
    return model.eval(), tok


def trace_tokens(trace: Trace) -> dict[int, np.ndarray] | None:
    """Generated token ids per trace request id, or None if the trace has no `token` column."""
    path = Path(trace.path) if trace.path else DEFAULT_TRACE
    if path.suffix.lower() != ".parquet" or not path.exists():
        return None
    names = pq.read_schema(path).names
    if "token" not in names:
        return None
    df = pq.read_table(path, columns=["request_id", "position", "token"]).to_pandas()
    df = df.sort_values(["request_id", "position"])
    return {int(r): g["token"].to_numpy(np.int64) for r, g in df.groupby("request_id", sort=False)}


def _prompt_texts(trace: Trace) -> dict[int, str] | None:
    if "prompts.jsonl" not in trace.metadata.get("prompts", ""):
        return None
    from ..prompts import load_prompts
    return {int(p["id"]): p["prompt"] for p in load_prompts("all")}


def request_sequences(trace: Trace, wl: Workload, tokenizer=None, vocab: int = 49152,
                      seed: int = 0) -> list[np.ndarray]:
    """Prompt + generated token ids of every workload request.

    Recorded traces: the prompt text (traces/prompts, by request id) in the chat template
    and the recorded tokens; its length must equal the trace's prompt_len. Traces without
    tokens (synthetic, CSV): seeded random ids of the right lengths (timing does not
    depend on the ids)."""
    tokens = trace_tokens(trace)
    texts = _prompt_texts(trace) if tokens is not None and tokenizer is not None else None
    source = wl.source if wl.source is not None else np.arange(wl.num_requests)
    rng = np.random.default_rng(seed)
    out = []
    cache: dict[int, np.ndarray] = {}
    for i, t in enumerate(source.tolist()):
        P, G = int(wl.prompt_len[i]), int(wl.gen_len[i])
        if t in cache:
            out.append(cache[t])
            continue
        rid = int(trace.request_id[t])
        if tokens is not None and texts is not None and rid in texts:
            from ..generate import chat_ids
            prompt = np.asarray(chat_ids(tokenizer, texts[rid]), dtype=np.int64)
            if prompt.size != P:
                raise TraceError(f"{trace.path}: request {rid}'s prompt is {prompt.size} tokens in the chat "
                                 f"template but the trace says prompt_len={P}")
            seq = np.concatenate([prompt, tokens[rid]])
        elif tokens is not None and rid in tokens:
            seq = np.concatenate([rng.integers(0, vocab, size=P), tokens[rid]])
        else:
            seq = rng.integers(0, vocab, size=P + G)
        if seq.size != P + G:
            raise TraceError(f"{trace.path}: request {rid} has {seq.size - P} tokens, expected {G}")
        cache[t] = seq
        out.append(seq)
    return out
