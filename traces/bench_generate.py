"""`python -m traces.bench_generate`: the executor against transformers' `generate`.

A sanity check of the real backend's speed: the vanilla 30-layer SmolLM2 (one loop,
no LoRA) served by the engine's `continuous` scheduler through `RealSteps`, against
Hugging Face `generate` (greedy, KV cache, left padding) on the same held-out
prompts, both in the same dtype, pinned the same way, each request generating the
same number of tokens (generate is forced to --new tokens; the executor is fed the
tokens generate produced, teacher-forced). Reports generated tokens per second of
each and their ratio at each batch size; the executor must not be slower at batch >= 8.
Both are timed by the same clock (traces.serving.clock.step_timer: process CPU time with one
CPU thread, wall time otherwise).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .precision import add_dtype_option, dtype_from_args


def hf_generate(hf, tok, prompts: list[list[int]], batch: int, new: int, device,
                timer: str = "wall") -> tuple[float, list[np.ndarray]]:
    """Seconds generate takes (by the executor's step clock, so both are timed alike) and its tokens."""
    import torch
    clock = time.process_time if timer == "process" else time.perf_counter
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    outs, t = [], 0.0
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        P = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), P), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), P), dtype=torch.long)
        for b, p in enumerate(chunk):
            ids[b, P - len(p):] = torch.tensor(p)
            mask[b, P - len(p):] = 1
        t0 = clock()
        with torch.inference_mode():
            g = hf.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new,
                            min_new_tokens=new, do_sample=False, pad_token_id=pad)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t += clock() - t0
        outs.extend(g[:, P:].cpu().numpy())
    return t, outs


def executor_clock(packed, prompts, gens, batch: int, new: int):
    """The continuous scheduler over these requests, teacher-forced on `gens`, run for real:
    the run's metrics and its clock (whose `log` holds every measured step)."""
    import pandas as pd

    from sim.config import ModelConfig, RunConfig
    from sim.simulation import simulate
    from sim.trace import trace_from_frame
    from sim.validate import validate

    from .serving.clock import RealSteps

    rows = [(r, j, len(p), 1) for r, p in enumerate(prompts) for j in range(new)]
    trace = trace_from_frame(pd.DataFrame(rows, columns=["request_id", "position", "prompt_len", "exit_loop"]),
                             "<bench>", 1)
    cfg = RunConfig()
    cfg.progress = False
    cfg.scheduler.name, cfg.scheduler.batch_size = "continuous", batch
    cfg.exit.policy = "none"
    cfg.memory.limit = False
    cfg.model = ModelConfig(name="smollm2_135m_vanilla", loops=1, layers_per_block=30, prelude_layers=0,
                            coda_layers=0, lora_rank=0)
    validate(cfg)
    seqs = [np.concatenate([np.asarray(p), g[:new]]) for p, g in zip(prompts, gens)]
    made = []

    def clock(wl, st):
        made.append(RealSteps(packed, batch, wl.prompt_len, seqs, "ignore"))
        return made[0]

    res = simulate(cfg, trace=trace, clock=clock)
    return res.metrics, made[0]


def executor_run(packed, prompts, gens, batch: int, new: int) -> float:
    """Makespan of the continuous scheduler over these requests (sum of measured steps)."""
    return executor_clock(packed, prompts, gens, batch, new)[0]["makespan_s"]


def vanilla_pair(dtype, device):
    """The original SmolLM2 twice, for a side-by-side run: transformers' model (with its
    tokenizer) and the executor's packing of the same weights as a one-loop vanilla model."""
    from sim.config import ModelConfig

    from .base_model import load_base
    from .serving.inputs import serving_model
    from .serving.weights import PackedModel

    hf, tok = load_base("gguf")
    hf = hf.to(dtype=dtype, device=device).eval()
    vanilla, _ = serving_model(ModelConfig(name="smollm2_135m_vanilla", loops=1, layers_per_block=30,
                                           prelude_layers=0, coda_layers=0, lora_rank=0))
    return hf, tok, PackedModel(vanilla, dtype, str(device))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m traces.bench_generate")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--requests", default="4,16,32", help="requests per batch size")
    ap.add_argument("--new", type=int, default=48, help="generated tokens per request")
    ap.add_argument("--device", default="cpu")
    add_dtype_option(ap)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpus", default="0")
    ap.add_argument("--out", default=None, help="write the table as JSON here")
    ap.add_argument("--no-pause", action="store_true", help="do not pause the background uptraining job")
    args = ap.parse_args(argv)
    args.dtype = dtype_from_args(args)
    from .cli import torch_missing
    if torch_missing("traces.bench_generate"):
        return 2
    import torch

    from .serving.clock import step_timer, warm_up
    from .generate import chat_ids
    from .prompts import load_prompts
    from .quiet import background_paused, pin

    placement = pin(args.threads, [int(c) for c in args.cpus.split(",") if c.strip()] if args.cpus else None)
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    hf, tok, packed = vanilla_pair(dtype, device)
    texts = [p["prompt"] for p in load_prompts("heldout")]
    timer = step_timer(device)
    rows = []
    with background_paused(not args.no_pause) as paused:
        warm_up(packed)
        hf_generate(hf, tok, [chat_ids(tok, texts[0])], 1, 4, device)  # warm-up
        for b, n in zip(map(int, args.batches.split(",")), map(int, args.requests.split(","))):
            prompts = [chat_ids(tok, t) for t in texts[:n]]
            t_hf, gens = hf_generate(hf, tok, prompts, b, args.new, device, timer)
            t_ex = executor_run(packed, prompts, gens, b, args.new)
            tokens = n * args.new
            rows.append({"batch": b, "requests": n, "tokens": tokens, "generate_tok_s": tokens / t_hf,
                         "executor_tok_s": tokens / t_ex, "executor_over_generate": t_hf / t_ex})
            print(f"batch {b:>3}: generate {tokens / t_hf:7.1f} tok/s, executor {tokens / t_ex:7.1f} tok/s "
                  f"({t_hf / t_ex:.2f}x)", file=sys.stderr)
    info = {**placement, "timer": timer, "device": args.device, "dtype": args.dtype, "new_tokens": args.new,
            "background_paused": paused is not None, "torch": torch.__version__, "rows": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(info, indent=2) + "\n")
    print("| batch | requests x tokens | generate (tok/s) | executor (tok/s) | executor / generate |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['requests']} x {args.new} | {r['generate_tok_s']:.1f} | "
              f"{r['executor_tok_s']:.1f} | {r['executor_over_generate']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
