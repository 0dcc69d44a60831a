"""Seeded synthetic exit traces, for tests and for settings no real model covers
(the paper's Gemma: trace=paper_like).

Exit loops follow a given distribution with within-request correlation: with
probability `correlation` a token repeats its predecessor's exit loop, otherwise
it draws afresh. Real traces show such runs (easy spans, hard spans), and they
matter for batching because they make a request's total depth lumpier.
Confidences are drawn so that a threshold policy has a real trade-off: loops at
or after the exit are usually confident, earlier ones usually not, with overlap.

Write one to a file (then replay it with trace.path=FILE):
    python -m sim.synthetic my_synthetic_3loop.parquet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from sim.config import SyntheticTraceConfig
from sim.trace import Trace, trace_from_frame, write_trace
from sim.trace_io import provenance


def _lengths(rng: np.random.Generator, mean: int, n: int, dist: str, minimum: int) -> np.ndarray:
    if dist == "fixed":
        return np.full(n, mean, dtype=np.int64)
    if dist == "uniform":
        return rng.integers(max(minimum, mean // 2), max(minimum, 3 * mean // 2) + 1, size=n)
    sigma = 0.6  # lognormal with the requested mean
    draws = rng.lognormal(np.log(max(mean, 1)) - sigma**2 / 2, sigma, size=n)
    return np.maximum(minimum, np.round(draws)).astype(np.int64)


def _exit_loops(rng: np.random.Generator, gen_len: np.ndarray, probs: np.ndarray, rho: float) -> np.ndarray:
    total = int(gen_len.sum())
    fresh = rng.choice(np.arange(1, probs.size + 1), size=total, p=probs).astype(np.int8)
    repeat = rng.random(total) < rho
    starts = np.concatenate(([0], np.cumsum(gen_len)[:-1]))
    repeat[starts] = False  # a request's first token has no predecessor
    # Each token takes the exit of the latest non-repeating token at or before it.
    source = np.where(repeat, 0, np.arange(total))
    np.maximum.accumulate(source, out=source)
    return fresh[source]


def generate(cfg: SyntheticTraceConfig, seed: int) -> pd.DataFrame:
    """A trace as a DataFrame in the file schema (see README)."""
    rng = np.random.default_rng(seed)
    probs = np.asarray(cfg.exit_probs, dtype=np.float64)
    probs = probs / probs.sum()
    n_loops = probs.size
    gen_len = _lengths(rng, cfg.gen_len, cfg.num_requests, cfg.length_dist, minimum=1)
    prompt_len = _lengths(rng, cfg.prompt_len, cfg.num_requests, cfg.length_dist, minimum=0)
    exits = _exit_loops(rng, gen_len, probs, cfg.correlation)
    total = exits.size
    loops = np.arange(1, n_loops + 1)
    correct = loops[None, :] >= exits[:, None]
    conf = np.where(correct, rng.beta(6, 1.5, size=(total, n_loops)), rng.beta(2, 3, size=(total, n_loops)))
    frame = pd.DataFrame({
        "request_id": np.repeat(np.arange(cfg.num_requests), gen_len),
        "position": np.concatenate([np.arange(g) for g in gen_len]),
        "prompt_len": np.repeat(prompt_len, gen_len),
        "exit_loop": exits.astype(np.int64),
    })
    for k in range(n_loops):
        frame[f"conf_{k + 1}"] = conf[:, k]
    for k in range(n_loops):
        frame[f"correct_{k + 1}"] = correct[:, k]
    return frame


def generate_trace(cfg: SyntheticTraceConfig, seed: int) -> Trace:
    """Generate straight into a validated `Trace`, without touching the disk."""
    return trace_from_frame(generate(cfg, seed), f"<synthetic seed={seed}>", len(cfg.exit_probs))


def main(argv: list[str] | None = None) -> None:
    defaults = SyntheticTraceConfig()
    parser = argparse.ArgumentParser(description="Write a seeded synthetic exit trace (Parquet).")
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-requests", type=int, default=defaults.num_requests)
    parser.add_argument("--prompt-len", type=int, default=defaults.prompt_len)
    parser.add_argument("--gen-len", type=int, default=defaults.gen_len)
    parser.add_argument("--length-dist", choices=("fixed", "uniform", "lognormal"), default=defaults.length_dist)
    parser.add_argument("--exit-probs", type=float, nargs="+", default=defaults.exit_probs)
    parser.add_argument("--correlation", type=float, default=defaults.correlation)
    args = parser.parse_args(argv)
    cfg = SyntheticTraceConfig(args.num_requests, args.prompt_len, args.gen_len, args.length_dist,
                               list(args.exit_probs), args.correlation)
    frame = generate(cfg, args.seed)
    made_by = provenance(["python", "-m", "sim.synthetic", *(sys.argv[1:] if argv is None else argv)],
                         model="synthetic (sim.synthetic)", loops=len(cfg.exit_probs), seed=args.seed,
                         generator=repr(cfg))
    write_trace(frame, args.out, len(cfg.exit_probs), made_by)
    print(f"wrote {args.out}: {len(frame)} tokens, {cfg.num_requests} requests, {len(cfg.exit_probs)} loops")


if __name__ == "__main__":
    main()
