"""Record a per-token exit trace from an uptrained recursive model.

    python -m traces.record checkpoint=runs/uptrain/r2_mc_r64/best.pt name=smollm2_r2_mc_r64

Batched greedy generation (ChatML template) over held-out prompts. The
student and the original model run in lockstep on the same tokens (each with
its own KV cache), so for every generated token we know every loop's
prediction and the original model's top-1 given the same prefix. Generation
always continues with the final loop's token, so one trace serves every exit
policy. Writes Parquet in the rrtsim trace contract (see
``sim.trace.load_trace``) with num_loops and provenance in the schema
metadata, and optionally a markdown card with quality numbers.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from .cli import torch_missing

if __name__ == "__main__" and torch_missing("traces.record"):  # one line, not an ImportError traceback
    sys.exit(2)

import torch  # noqa: E402

from sim.trace_io import provenance, write_trace_parquet

from .base_model import describe_source, load_base, resolve_device
from .generate import StepView, chat_ids, decode, greedy, stop_ids
from .prompts import PROMPTS_FILE, load_prompts
from .recursive import load_model, original_from_hf


def per_loop_stats(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """pred, conf (top-1 prob), margin (top1 - top2), entropy (nats) per row."""
    lp = torch.log_softmax(logits.float(), -1)
    p = lp.exp()
    top = p.topk(2, dim=-1)
    return {"pred": top.indices[:, 0], "conf": top.values[:, 0],
            "margin": top.values[:, 0] - top.values[:, 1],
            "entropy": -(p * lp).sum(-1)}


def exit_loop_of(preds: np.ndarray) -> np.ndarray:
    """Oracle exit: first loop (1-based) whose prediction equals the last loop's.
    preds: (tokens, num_loops)."""
    return (preds == preds[:, -1:]).argmax(1) + 1


def record_batch(student, teacher, tok, prompts: list[dict], max_new: int) -> list[dict]:
    """Generate one batch greedily; return one row dict per generated token."""
    ids = [chat_ids(tok, p["prompt"]) for p in prompts]
    N = student.num_exits
    steps: list[tuple[torch.Tensor, list[dict], torch.Tensor, torch.Tensor]] = []

    def on_step(v: StepView):
        per = [{k: t.cpu() for k, t in per_loop_stats(l).items()} for l in v.logits[0]]
        steps.append((v.active.cpu(), per, v.logits[1][-1].argmax(-1).cpu(), v.token.cpu()))

    decode([student, teacher], ids, greedy, max_new, stop_ids(tok),
           tok.pad_token_id if tok.pad_token_id is not None else 0, on_step)
    rows = []
    for b, p in enumerate(prompts):
        for pos, (active, per, tt, token) in enumerate(steps):
            if not bool(active[b]):
                break
            r = {"request_id": int(p["id"]), "position": pos, "prompt_len": len(ids[b]),
                 "token": int(token[b]), "teacher_token": int(tt[b])}
            for k in range(N):
                r[f"pred_{k + 1}"] = int(per[k]["pred"][b])
                r[f"conf_{k + 1}"] = float(per[k]["conf"][b])
                r[f"margin_{k + 1}"] = float(per[k]["margin"][b])
                r[f"entropy_{k + 1}"] = float(per[k]["entropy"][b])
            rows.append(r)
    return rows


def recorded_frame(rows: list[dict], num_loops: int) -> pd.DataFrame:
    """The per-token rows of a recording as a trace table (rrtsim's contract plus the
    recording's own columns), with the oracle exit and correct_k derived from pred_k."""
    df = pd.DataFrame(rows).sort_values(["request_id", "position"]).reset_index(drop=True)
    preds = df[[f"pred_{k}" for k in range(1, num_loops + 1)]].to_numpy()
    df["exit_loop"] = exit_loop_of(preds).astype("int64")
    for k in range(1, num_loops + 1):
        df[f"correct_{k}"] = df[f"pred_{k}"] == df[f"pred_{num_loops}"]
    ints = ["request_id", "position", "prompt_len", "token", "teacher_token", "exit_loop"] + \
        [f"pred_{k}" for k in range(1, num_loops + 1)]
    df[ints] = df[ints].astype("int64")
    front = ["request_id", "position", "prompt_len", "exit_loop", "token", "teacher_token"]
    loops = [f"{c}_{k}" for k in range(1, num_loops + 1)
             for c in ("pred", "conf", "margin", "entropy", "correct")]
    return df[front + loops]


def _base_name(source: str) -> str:
    d = describe_source(source)
    return f"SmolLM2-135M-Instruct ({d})" if d.endswith(".gguf") else d


def uptrain_provenance(checkpoint, ck: dict) -> dict[str, str]:
    """What the card needs from the uptraining run, stored in the trace itself so the card
    renders without the checkpoint (which is never in git): config, counters, learning curve."""
    state = {k: v for k, v in ck.get("train_state", {}).items() if k != "rng"}
    curve = Path(checkpoint).parent / "curve.csv"
    return {"uptrain_config": json.dumps(ck.get("config", {}), default=str),
            "uptrain_state": json.dumps(state, default=str),
            "uptrain_curve": curve.read_text() if curve.exists() else ""}


def check_output(cfg) -> Path:
    """Where the trace goes; a ConfigError when a trace is there and overwrite=true is not given."""
    from sim.errors import ConfigError

    out = Path(cfg.out_dir) / f"{cfg.name}.parquet"
    if out.exists() and not cfg.overwrite:
        raise ConfigError(f"{out} exists (a bundled trace?); choose another name=... "
                          f"or pass overwrite=true to replace it and its card")
    return out


def check_command(argv: list[str]) -> None:
    from .cli import check_hydra_command

    cfg = check_hydra_command("record", argv, "traces.record", input_files=("checkpoint",))
    if cfg is not None:
        check_output(cfg)


def run(cfg) -> tuple[Path, dict]:
    out = check_output(cfg)
    dev = resolve_device(cfg.device)
    torch.set_num_threads(cfg.threads)
    from tqdm import tqdm
    from .stats import trace_stats
    hf, tok = load_base(cfg.source)
    teacher = original_from_hf(hf).eval().to(dev)
    student, ck = load_model(cfg.checkpoint, hf)
    student.eval().to(dev)
    del hf
    spec, st = student.spec, ck.get("train_state", {})
    prompts = load_prompts(cfg.split)
    if cfg.num_prompts:
        prompts = prompts[:cfg.num_prompts]
    # similar prompt lengths batch together (less padding)
    prompts = sorted(prompts, key=lambda p: len(chat_ids(tok, p["prompt"])))
    rows, t0 = [], time.time()
    bar = tqdm(total=len(prompts), desc=f"record {cfg.name}", unit="prompt", file=sys.stderr)
    for i in range(0, len(prompts), cfg.batch):
        chunk = prompts[i:i + cfg.batch]
        rows.extend(record_batch(student, teacher, tok, chunk, cfg.max_new))
        bar.update(len(chunk))
        bar.set_postfix(tokens=len(rows), tok_s=f"{len(rows) / (time.time() - t0):.1f}")
    bar.close()
    seconds = time.time() - t0
    N = student.num_exits
    df = recorded_frame(rows, N)
    layout = spec.layout_of(student.num_layers)
    meta = {
        "num_loops": N, "model": f"{_base_name(cfg.source)} relaxed recursive: {layout.describe()}",
        # the layout (sim.layout) and the dimensions that pick the simulator's model for this trace
        **layout.to_metadata(), "d_model": student.dims.hidden, "vocab": student.dims.vocab,
        "init": spec.init,
        "uptrain_steps": st.get("step", 0), "uptrain_tokens": st.get("tokens", 0),
        "prompts": f"{PROMPTS_FILE.relative_to(Path.cwd()) if PROMPTS_FILE.is_relative_to(Path.cwd()) else PROMPTS_FILE.name}"
                   f" split={cfg.split} n={len(prompts)}",
        **provenance(["python", "-m", "traces.record", *sys.argv[1:]]),
        "checkpoint": str(cfg.checkpoint), "max_new": cfg.max_new, "decoding": "greedy on the final loop",
        "record_seconds": f"{seconds:.1f}", "record_tok_s": f"{len(df) / seconds:.1f}",
        "exit_semantics": "coda",  # intermediate exits run the coda layers (traces/recursive.py)
        **uptrain_provenance(cfg.checkpoint, ck),
    }
    meta = {k: str(v) for k, v in meta.items()}
    write_trace_parquet(df, out, meta)
    stats = trace_stats(df)
    stats["record_tok_s"] = len(df) / seconds
    stats["record_seconds"] = seconds
    print(json.dumps(stats, indent=1), file=sys.stderr)
    if cfg.card:
        from .card import write_card
        write_card(out, df, meta, stats, tok, ck)
    return out, stats


def main():
    from sim.errors import UserError

    from .allocator import reexec_with_tcmalloc
    from .cli import fail, run_checked

    run_checked(check_command, sys.argv[1:])
    reexec_with_tcmalloc("traces.record")
    import hydra

    @hydra.main(config_path="conf", config_name="record", version_base="1.3")
    def _run(cfg):
        try:
            run(cfg)
        except UserError as exc:
            sys.exit(fail(exc))

    _run()


if __name__ == "__main__":
    main()
