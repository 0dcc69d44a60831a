"""Write the markdown card that ships next to a bundled trace.

Why generated: every number on the card (agreement, exit histogram,
recording speed, learning curve) comes from the trace and the run's
curve.csv, so a card never drifts from its data.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd


def _curve_rows(ckpt_path: Path) -> list[dict]:
    p = Path(ckpt_path).parent / "curve.csv"
    if not p.exists():
        return []
    with open(p) as f:
        return list(csv.DictReader(f))


def _uptrain_command(cfg: dict) -> str:
    keys = ["name", "num_loops", "head", "tail", "init", "lora_rank", "batch", "seq_len", "lr",
            "max_minutes", "refresh_every", "device", "threads"]
    return "python -m traces.uptrain " + " ".join(f"{k}={cfg[k]}" for k in keys if k in cfg)


def write_card(parquet: Path, df: pd.DataFrame, meta: dict, stats: dict, tok, ck: dict) -> Path:
    N = stats["num_loops"]
    cfg = ck.get("config", {})
    lines = [f"# Trace card: {parquet.stem}", "",
             f"Real per-token exit trace of a relaxed recursive SmolLM2-135M-Instruct, "
             f"recorded by `traces.record` (rrtsim).", "",
             "## Model", "",
             f"- {meta['model']}",
             f"- layout `{meta['layout']}`, init `{meta['init']}`, LoRA rank {meta['lora_rank']}, "
             f"{N} loops (exits after every loop: final norm + tied LM head)",
             f"- uptrained {meta['uptrain_steps']} steps, {int(meta['uptrain_tokens']):,} tokens of "
             f"distillation (KL to the original model; weights 0.1 intermediate / 1.0 last loop), "
             f"embeddings frozen, on the teacher's own sampled answers to the *train* prompts",
             f"- uptraining config: `{ {k: cfg[k] for k in sorted(cfg) if k in ('batch','seq_len','lr','threads','device','temperature','refresh_every','max_minutes')} }`",
             f"- uptraining command (resumable): `{_uptrain_command(cfg)}`",
             f"- uptraining wall clock: {float(ck.get('train_state', {}).get('elapsed_s', 0)) / 60:.1f} min "
             f"(shared 2-core CPU machine)",
             "", "## How it was made", "",
             f"- prompts: {meta['prompts']} (held-out: never seen by uptraining), ChatML template",
             f"- greedy decoding on the final loop, at most {meta['max_new']} new tokens per request "
             f"(stop token `<|im_end|>` included as a generated token)",
             f"- checkpoint `{meta['checkpoint']}`, commit `{meta['commit']}`, date {meta['date']}",
             f"- command: `{meta['command']}`",
             "", "## Quality", "",
             f"- {stats['tokens']:,} generated tokens from {stats['requests']} requests "
             f"(mean {stats['mean_gen_len']:.1f} tokens per request)",
             f"- **final-loop top-1 agreement with the original SmolLM2 (same prefix): "
             f"{stats['agree_teacher_final']:.3f}** (target 0.6)",
             "", "| loop | agreement with final loop (correct_k) | agreement with original | mean conf | exits here |",
             "|---|---|---|---|---|"]
    for k in range(1, N + 1):
        lines.append(f"| {k} | {stats[f'agree_final_{k}']:.3f} | {stats[f'agree_teacher_{k}']:.3f} | "
                     f"{stats[f'mean_conf_{k}']:.3f} | {stats['exit_hist'][k]:,} "
                     f"({stats['exit_frac'][k]:.1%}) |")
    lines += ["", f"- mean oracle exit loop: {stats['mean_exit_loop']:.3f} of {N}",
              f"- recording speed: {stats['record_tok_s']:.1f} generated tokens/s "
              f"(student + original in lockstep, {stats['record_seconds']:.0f} s)"]
    rows = _curve_rows(Path(meta["checkpoint"]))
    if rows:
        lines += ["", f"## Learning curve (held-out, teacher-forced agreement with the original's "
                  f"top-1 on {cfg.get('eval_prompts', '?')} held-out prompts' greedy teacher answers)", "",
                  "| step | tokens | minutes | train tok/s | loss | " +
                  " | ".join(f"agree loop {k}" for k in range(1, N + 1)) + " |",
                  "|---|---|---|---|---|" + "---|" * N]
        keep = rows if len(rows) <= 14 else rows[::max(1, len(rows) // 12)] + [rows[-1]]
        seen = set()
        for r in keep:
            if r["step"] in seen:
                continue
            seen.add(r["step"])
            lines.append(f"| {r['step']} | {int(float(r['tokens'] or 0)):,} | "
                         f"{float(r['elapsed_s'] or 0) / 60:.1f} | {r.get('tok_s') or '-'} | "
                         f"{(float(r['loss']) if r.get('loss') else float('nan')):.3f} | " +
                         " | ".join(f"{float(r[f'agree_{k}']):.3f}" for k in range(1, N + 1)) + " |")
    lines += ["", "## Samples (prompt, then the recursive model's greedy answer)", ""]
    from .prompts import load_prompts
    prompts = {p["id"]: p["prompt"] for p in load_prompts("all")}
    lengths = df.groupby("request_id").size()
    picks = [r for r in lengths.index if lengths[r] >= 24][:2] or list(lengths.index[:1])
    for rid in picks:
        g = df[df.request_id == rid]
        lines += [f"**Prompt {rid}:** {prompts.get(int(rid), '?')}", "",
                  "```text", tok.decode(g.token.tolist()).strip()[:900], "```", ""]
    lines += ["## Columns", "",
              "request_id, position (0-based, contiguous), prompt_len, exit_loop (oracle: first loop "
              "whose top-1 equals the final loop's), token (emitted = final loop's top-1), "
              "teacher_token (original model's top-1, same prefix), and per loop k: pred_k, conf_k "
              "(top-1 prob), margin_k (top1 - top2 prob), entropy_k (nats), correct_k "
              "(pred_k == final loop's). Schema metadata: num_loops and provenance (model, loops, "
              "layout, init, lora_rank, uptrain_steps, uptrain_tokens, prompts, commit, command, date).", ""]
    path = parquet.with_suffix(".md")
    path.write_text("\n".join(lines))
    return path
