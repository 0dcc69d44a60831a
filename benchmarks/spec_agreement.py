"""`python -m benchmarks.spec_agreement`: does real-time self-speculation (depthwise_spec,
scheduler.accept=live, free-running) emit exactly full-depth greedy decoding (continuous,
exit=none, free-running) in a given dtype, and where not, why?

Both runs go through the simulator's engine with the real executor, on the held-out prompts
in the chat template, each generating --new tokens. Reported: requests identical, token
agreement, and at each request's first divergence the top-2 logit gap of both runs there,
next to the median gap over all positions (a divergence at a gap of ~0 is a near-tie that
the two runs' different batch shapes round differently). In fp32 the two must agree exactly
(tests/traces/test_lossless.py); bf16 is what this measures:

    python -m benchmarks.spec_agreement --prompts 32 --new 64 --dtype bfloat16

The layout is the lossless test's (24 unique layers + 2 looped twice + 2, SVD conversion),
where about half the drafts hold without uptraining. Prints JSON; --out writes it too.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

LAYOUT = ["model=smollm2_135m_r2_mc", "model.name=smollm2_135m_r2_p24", "model.prelude_layers=24",
          "model.layers_per_block=2", "model.coda_layers=2"]


def final_logits(records) -> dict:
    """(request, position) -> logits of the token's final (leaving) head."""
    out = {}
    for rec in records:
        for i, r in enumerate(rec["requests"]):
            if rec["leaving"][i]:
                out[(int(r), int(rec["positions"][i]))] = rec["logits"][i]
    return out


def top2_gap(logits) -> float:
    import torch
    v = torch.topk(logits.float(), 2).values
    return float(v[0] - v[1])


def run(scheduler: list[str], packed, prompts, new: int, batch: int):
    import pandas as pd

    from sim.config import load_config
    from sim.trace import trace_from_frame
    from traces.execute import compose, run_real
    cfg = load_config(compose(LAYOUT + scheduler + [f"scheduler.batch_size={batch}", "memory.limit=false"]))
    cfg.progress = False
    N = packed.loops
    frame = pd.DataFrame([(r, j, len(p), N) for r, p in enumerate(prompts) for j in range(new)],
                         columns=["request_id", "position", "prompt_len", "exit_loop"])
    seqs = [np.concatenate([p, np.zeros(new, np.int64)]) for p in prompts]
    return run_real(cfg, packed, None, record=True, trace=trace_from_frame(frame, "<agreement>", N),
                    free_running=True, sequences=seqs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.spec_agreement", description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from traces.execute import torch_missing
    if torch_missing("benchmarks.spec_agreement"):
        return 2
    import torch

    from sim.config import load_config
    from traces.execute import compose
    from traces.generate import chat_ids
    from traces.prompts import load_prompts
    from traces.serving.inputs import serving_model
    from traces.serving.weights import PackedModel
    torch.set_num_threads(1)
    model, tok = serving_model(load_config(compose(LAYOUT)).model)
    packed = PackedModel(model, getattr(torch, args.dtype))
    prompts = [np.asarray(chat_ids(tok, p["prompt"]), dtype=np.int64)
               for p in load_prompts("heldout")[:args.prompts]]
    ref = run(["scheduler=continuous", "exit=none"], packed, prompts, args.new, args.batch)
    spec = run(["scheduler=depthwise_spec", "scheduler.accept=live"], packed, prompts, args.new, args.batch)
    a = ref.generated.token.to_numpy().reshape(len(prompts), args.new)
    b = spec.generated.token.to_numpy().reshape(len(prompts), args.new)
    la, lb = final_logits(ref.records), final_logits(spec.records)
    gaps = np.array([top2_gap(v) for v in la.values()])
    report = {"dtype": args.dtype, "prompts": len(prompts), "new": args.new, "batch": args.batch,
              "acceptance_rate": spec.metrics.get("acceptance_rate"),
              "requests_identical": int((a == b).all(1).sum()), "token_agreement": float((a == b).mean()),
              "median_top2_gap": float(np.median(gaps)), "divergences": []}
    for q in np.flatnonzero((a != b).any(1)).tolist():
        p = int(np.flatnonzero(a[q] != b[q])[0])
        g = top2_gap(la[(q, p)])
        report["divergences"].append({"request": q, "position": p, "tokens": [int(a[q, p]), int(b[q, p])],
                                      "top2_gap_continuous": g, "top2_gap_spec": top2_gap(lb[(q, p)]),
                                      "share_of_positions_with_a_smaller_gap": float((gaps < g).mean())})
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
