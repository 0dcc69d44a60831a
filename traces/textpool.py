"""Training text that needs no download: the teacher's own sampled answers.

Why: the distillation target is the original model's distribution on the
kind of text the recursive model will later generate (chat answers), so the
teacher's own samples at temperature ~0.8 over the *train* prompts are a
cheap, in-distribution corpus. Several samples per prompt and a growing pool
keep tokens from being repeated so often that the student overfits (the
previous probe overfit 32k tokens after ~7 epochs).

Shards are written under ~/.cache/rrtsim/textpool/<base>/ (never committed):
each shard is one batch of full ChatML sequences (prompt + answer) as token
id lists. ``python -m traces.textpool --shards N`` adds N shards.
"""
from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from .base_model import DEFAULT_SOURCE, cache_root, describe_source
from .generate import chat_ids, decode, sampler, stop_ids
from .prompts import load_prompts


def pool_dir(source: str = DEFAULT_SOURCE) -> Path:
    name = describe_source(source).replace("/", "--")
    return cache_root() / "textpool" / name


def shard_paths(source: str = DEFAULT_SOURCE) -> list[Path]:
    return sorted(pool_dir(source).glob("shard_*.pt"))


def load_sequences(source: str = DEFAULT_SOURCE) -> list[list[int]]:
    seqs = []
    for p in shard_paths(source):
        seqs.extend(torch.load(p)["sequences"])
    return seqs


def pool_tokens(source: str = DEFAULT_SOURCE) -> int:
    return sum(torch.load(p)["n_generated"] for p in shard_paths(source))


@torch.no_grad()
def add_shard(teacher, tok, source: str = DEFAULT_SOURCE, batch: int = 32,
              max_new: int = 256, temperature: float = 0.8) -> dict:
    """Sample one batch of answers to random train prompts; write one shard."""
    d = pool_dir(source)
    d.mkdir(parents=True, exist_ok=True)
    idx = len(shard_paths(source))
    seed = 1000 + idx
    rng = random.Random(seed)
    prompts = load_prompts("train")
    chosen = [rng.choice(prompts) for _ in range(batch)]
    ids = [chat_ids(tok, p["prompt"]) for p in chosen]
    gen = torch.Generator(device=teacher.embed.device).manual_seed(seed)
    t0 = time.time()
    from tqdm import tqdm
    with tqdm(total=max_new, desc=f"text pool shard {idx}", unit="step", disable=None, leave=False) as bar:
        res = decode([teacher], ids, sampler(temperature, gen), max_new, stop_ids(tok),
                     tok.pad_token_id if tok.pad_token_id is not None else 0,
                     on_step=lambda _: bar.update(1))
    dt = time.time() - t0
    seqs = [p + g for p, g in zip(ids, res.tokens)]
    n = sum(len(g) for g in res.tokens)
    shard = {"sequences": seqs, "prompt_ids": [p["id"] for p in chosen], "n_generated": n,
             "temperature": temperature, "seed": seed, "seconds": dt}
    tmp = d / f".shard_{idx:05d}.tmp"
    torch.save(shard, tmp)
    tmp.rename(d / f"shard_{idx:05d}.pt")
    return {"shard": idx, "tokens": n, "tok_s": n / dt}


def main(argv=None):
    if argv is None:
        from .allocator import reexec_with_tcmalloc

        reexec_with_tcmalloc("traces.textpool")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=DEFAULT_SOURCE)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-new", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from .base_model import load_base
    from .recursive import original_from_hf
    hf, tok = load_base(a.source)
    teacher = original_from_hf(hf).eval()
    for _ in range(a.shards):
        info = add_shard(teacher, tok, a.source, a.batch, a.max_new, a.temperature)
        print(f"shard {info['shard']}: {info['tokens']} tokens at {info['tok_s']:.0f} tok/s; "
              f"pool {pool_tokens(a.source)} tokens", flush=True)


if __name__ == "__main__":
    main()
