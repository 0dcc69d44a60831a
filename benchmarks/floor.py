"""`python -m benchmarks.floor`: the executor's decode step against this machine's floor and
against transformers' `generate`, side by side in one run (issue 27, item 3).

For each batch size (default 1, 8, 32), on the vanilla SmolLM2-135M (one loop, no LoRA: the
model `generate` runs too), the same held-out prompts in the chat template:
  * executor: the median decode step (steps without a prefill) of the engine's `continuous`
    scheduler through `RealSteps`, teacher-forced on the tokens `generate` produced;
  * floor: max(weight bytes / copy bandwidth, FLOPs / matmul peak), both measured in this run
    (`traces.profile_steps.machine_peaks`) in the compute dtype: the time a step cannot beat;
  * generate: `generate`'s time per generated token step (its prefill included), same dtype.
JSON (with provenance) goes to figures/data/floor_benchmark.json unless --out says otherwise.
On a shared machine the numbers are not claims; run it on a quiet one:

    python -m benchmarks.floor --batches 1,8,32 --requests 8,16,32 --new 32

A quick correctness run: `python -m benchmarks.floor --batches 1,2 --requests 1,2 --new 4 --out /tmp/f.json`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "figures" / "data" / "floor_benchmark.json"


def step_flops(layout: dict, batch: int, context: float) -> float:
    """Matmul FLOPs of one full-depth decode step of `batch` rows attending `context` positions."""
    d, h, kv, hd, mlp = (layout[k] for k in ("d_model", "n_heads", "n_kv_heads", "head_dim", "d_mlp"))
    layers = layout["prelude_layers"] + layout["coda_layers"] + layout["loops"] * layout["layers_per_block"]
    per_layer = d * (h + 2 * kv) * hd + h * hd * d + 3 * d * mlp  # qkv, o, gate/up/down
    attention = 2 * h * hd * context  # scores and weighted values
    return 2.0 * batch * (layers * (per_layer + attention) + layout["vocab"] * d)


def executor_steps(packed, prompts, gens, batch: int, new: int) -> np.ndarray:
    """Seconds of every decode step (no prefill) of a continuous run of these requests."""
    import pandas as pd

    from traces.bench_generate import executor_clock
    from traces.serving.clock import LOG_COLUMNS

    log = pd.DataFrame(executor_clock(packed, prompts, gens, batch, new)[1].log, columns=list(LOG_COLUMNS))
    return log.seconds[log.prefill_n == 0].to_numpy()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--requests", default="8,16,32", help="requests per batch size")
    ap.add_argument("--new", type=int, default=32, help="generated tokens per request")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpus", default="0")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--no-pause", action="store_true", help="do not pause the background uptraining job")
    from traces.precision import add_dtype_option, dtype_from_args
    add_dtype_option(ap)
    args = ap.parse_args(argv)
    from traces.execute import torch_missing
    if torch_missing("benchmarks.floor"):
        return 2
    args.dtype = dtype_from_args(args)
    batches = [int(b) for b in args.batches.split(",")]
    counts = [int(n) for n in args.requests.split(",")]
    if len(batches) != len(counts) or min(batches + counts) < 1 or args.new < 2:
        print("error: --batches and --requests need as many positive entries; --new >= 2", file=sys.stderr)
        return 2
    import torch

    from sim.trace_io import git_commit
    from traces.bench_generate import hf_generate, vanilla_pair
    from traces.generate import chat_ids
    from traces.profile_steps import device_name, machine_peaks
    from traces.prompts import load_prompts
    from traces.quiet import background_paused, pin
    from traces.serving.clock import step_timer, warm_up

    placement = pin(args.threads, [int(c) for c in args.cpus.split(",") if c.strip()] if args.cpus else None)
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    hf, tok, packed = vanilla_pair(dtype, device)
    layout, wbytes = packed.layout(), packed.weight_bytes()
    texts = [p["prompt"] for p in load_prompts("heldout")]
    timer = step_timer(device)
    rows = []
    with background_paused(not args.no_pause) as paused:
        peaks = machine_peaks(args.device, dtype, timer)
        warm_up(packed)
        hf_generate(hf, tok, [chat_ids(tok, texts[0])], 1, 4, device)
        for b, n in zip(batches, counts):
            prompts = [chat_ids(tok, t) for t in texts[:n]]
            t_hf, gens = hf_generate(hf, tok, prompts, b, args.new, device, timer)
            steps = executor_steps(packed, prompts, gens, b, args.new)
            ctx = float(np.mean([len(p) for p in prompts])) + args.new / 2
            floor_bw = wbytes / (peaks["bandwidth_gb_s"] * 1e9)
            floor_fl = step_flops(layout, b, ctx) / (peaks["peak_tflops"] * 1e12)
            floor = max(floor_bw, floor_fl)
            chunks = -(-n // b)
            gen_step = t_hf / (chunks * args.new)
            ex = float(np.median(steps))
            rows.append({"batch": b, "requests": n, "new_tokens": args.new, "executor_step_s": ex,
                         "executor_steps": int(steps.size), "floor_s": floor, "floor_weights_s": floor_bw,
                         "floor_flops_s": floor_fl, "generate_step_s": gen_step,
                         "executor_over_floor": ex / floor, "generate_over_executor": gen_step / ex})
            print(f"batch {b:>3}: executor {ex * 1e3:7.2f} ms/step, floor {floor * 1e3:6.2f} ms "
                  f"({ex / floor:.1f}x), generate {gen_step * 1e3:7.2f} ms/step ({gen_step / ex:.2f}x the executor)",
                  file=sys.stderr)
    info = {"device": device_name(args.device), "device_kind": device.type, "dtype": args.dtype, "timer": timer,
            "torch": torch.__version__, **placement, "background_paused": paused is not None,
            "weight_bytes": wbytes, "roofline": peaks, "model": "smollm2_135m_vanilla", "layout": layout,
            "commit": git_commit(), "command": " ".join(["python -m benchmarks.floor"] + argv),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=2) + "\n")
    print("| batch | executor (ms/step) | floor (ms) | executor / floor | generate (ms/step) | generate / executor |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['executor_step_s'] * 1e3:.2f} | {r['floor_s'] * 1e3:.2f} | "
              f"{r['executor_over_floor']:.1f}x | {r['generate_step_s'] * 1e3:.2f} | {r['generate_over_executor']:.2f}x |")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
