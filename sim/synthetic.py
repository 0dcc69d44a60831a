"""Seeded synthetic exit traces, for tests and for settings no real model covers
(the paper's Gemma: trace=paper_like).

Exit loops follow a given distribution with within-request correlation: with
probability `correlation` a token repeats its predecessor's exit loop, otherwise
it draws afresh. Real traces show such runs (easy spans, hard spans), and they
matter for batching because they make a request's total depth lumpier.
Confidences are drawn so that a threshold policy has a real trade-off: loops at
or after the exit are usually confident, earlier ones usually not, with overlap.

Two knobs serve studies over exit distributions and batching (analysis.regime_map,
the paper setting): `mean_exit` sets the exit distribution by one number (a token
still running leaves after each loop with the same probability, so the share leaving
after loop 1 follows from the mean), and `gen_len_min` makes generated lengths
uniform up to a cap, the spread that lets continuous batching gain over static.

Write one to a file (then replay it with trace.path=FILE):
    python -m sim.synthetic my_synthetic_3loop.parquet
The file carries the layout of a bundled model with its loops (`--model`; by default
the default model's family at that many loops, smollm2_135m_r3_mc for the default 3),
so `python -m sim.run trace.path=FILE` simulates that model, as it does a recorded trace.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from sim.config import ModelConfig, RunConfig, SyntheticTraceConfig, bundled_options, load_bundled, validate
from sim.errors import ConfigError
from sim.layout import Layout
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


def geometric_exit_probs(mean_exit: float, num_loops: int) -> np.ndarray:
    """Exit-loop probabilities over `num_loops` loops with the given mean: after each loop
    a token still running continues with the same probability c, so P(exit at k) =
    c^(k-1) (1 - c) and the last loop takes the rest; mean = (1 - c^N) / (1 - c). One
    parameter from all-exit-at-1 (mean 1, c = 0) to no-exit (mean N, c = 1)."""
    if not 1.0 <= mean_exit <= num_loops:
        raise ValueError(f"mean_exit={mean_exit} outside [1, {num_loops}]")
    k = np.arange(num_loops)

    def mean(c: float) -> float:
        return float((c ** k).sum())

    lo, hi = 0.0, 1.0
    for _ in range(60):  # mean(c) increases with c: bisection to double precision
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean(mid) < mean_exit else (lo, mid)
    c = (lo + hi) / 2
    probs = c ** k * (1 - c)
    probs[-1] = c ** (num_loops - 1)
    return probs


def exit_probs(cfg: SyntheticTraceConfig) -> np.ndarray:
    """The exit distribution a config asks for: `mean_exit` when set, else `exit_probs`."""
    if cfg.mean_exit is not None:
        return geometric_exit_probs(cfg.mean_exit, len(cfg.exit_probs))
    probs = np.asarray(cfg.exit_probs, dtype=np.float64)
    return probs / probs.sum()


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
    probs = exit_probs(cfg)
    n_loops = probs.size
    if cfg.gen_len_min is not None:
        gen_len = rng.integers(cfg.gen_len_min, cfg.gen_len + 1, size=cfg.num_requests)
    else:
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


def default_model(loops: int) -> str | None:
    """The bundled model a synthetic trace of `loops` loops is written for when `--model`
    is not given: the one of the default model's family (its source layers, width,
    vocabulary and layout kind) with that many loops; None when there is not exactly one."""
    base = ModelConfig()
    family = (base.source_layers, base.d_model, base.vocab, Layout.of(base).kind)
    found = [name for name in bundled_options("model")
             if (m := load_bundled(ModelConfig, "model", name)).loops == loops
             and (m.source_layers, m.d_model, m.vocab, Layout.of(m).kind) == family]
    return found[0] if len(found) == 1 else None


def layout_metadata(model: str, loops: int) -> dict[str, str]:
    """The metadata that makes `sim.run trace.path=FILE` pick bundled `model` (sim.layout)."""
    m = load_bundled(ModelConfig, "model", model)
    if m is None:
        raise ConfigError(f"--model {model!r} is not known; valid: {', '.join(bundled_options('model'))}, none")
    if m.loops != loops:
        raise ConfigError(f"--model {model} has {m.loops} loops but --exit-probs gives {loops}; "
                          f"give {m.loops} probabilities or another model")
    return {**Layout.of(m).to_metadata(), "d_model": str(m.d_model), "vocab": str(m.vocab)}


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
    parser.add_argument("--mean-exit", type=float, default=None,
                        help="mean exit loop over len(--exit-probs) loops; replaces the probabilities")
    parser.add_argument("--gen-len-min", type=int, default=None,
                        help="generated lengths uniform on [this, --gen-len]")
    parser.add_argument("--model", default=None,
                        help="bundled model (conf/model/) whose layout the trace carries, so that sim.run "
                             "simulates it on this trace; its loops must be len(--exit-probs). Default: the "
                             "default model's family at that many loops (smollm2_135m_r3_mc for 3); "
                             "none: no layout, then sim.run needs model=NAME.")
    args = parser.parse_args(argv)
    cfg = SyntheticTraceConfig(args.num_requests, args.prompt_len, args.gen_len, args.length_dist,
                               list(args.exit_probs), args.correlation, args.mean_exit, args.gen_len_min)
    run = RunConfig()
    run.trace.synthetic = cfg
    loops = len(cfg.exit_probs)
    model = default_model(loops) if args.model is None else (None if args.model == "none" else args.model)
    try:
        validate(run)
        layout = layout_metadata(model, loops) if model is not None else {}
    except ConfigError as exc:  # bad input: one line, exit code 2
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    frame = generate(cfg, args.seed)
    made_by = provenance(["python", "-m", "sim.synthetic", *(sys.argv[1:] if argv is None else argv)],
                         model=f"synthetic (sim.synthetic){f', layout of {model}' if model else ''}",
                         loops=loops, seed=args.seed, generator=repr(cfg))
    write_trace(frame, args.out, loops, {**made_by, **layout})
    print(f"wrote {args.out}: {len(frame)} tokens, {cfg.num_requests} requests, {loops} loops"
          + (f", layout of {model} (sim.run simulates that model on it)" if model else ", no model layout"))


if __name__ == "__main__":
    main()
