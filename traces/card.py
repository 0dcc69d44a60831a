"""Write the markdown card that ships next to a bundled trace.

Why generated: every number on the card (agreement, exit histogram,
recording speed, learning curve) comes from the trace and the run's
curve.csv, so a card never drifts from its data.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd

from .stats import threshold_table


NOTES = "## Notes (added by hand)"


def _curve_rows(meta: dict) -> list[dict]:
    """The learning curve: stored in the trace (traces.record), else next to the checkpoint."""
    text = meta.get("uptrain_curve")
    if not text:  # older traces: the run's curve next to its checkpoint, or the bundled copy
        ck = Path(meta.get("checkpoint", ""))
        for p in (ck.parent / "curve.csv", Path(__file__).parent / "data" / "curves" / f"{ck.parent.name}.csv"):
            if ck.name and p.is_file():
                text = p.read_text()
                break
    return list(csv.DictReader(io.StringIO(text))) if text else []


def run_info(meta: dict, checkpoint_path: Path | None = None) -> dict:
    """Config and counters of the uptraining run: from the trace's metadata, or for older
    traces from the checkpoint when it is still on this machine; empty otherwise."""
    if meta.get("uptrain_config"):
        return {"config": json.loads(meta["uptrain_config"]),
                "train_state": json.loads(meta.get("uptrain_state") or "{}")}
    if checkpoint_path is not None and checkpoint_path.is_file():
        import torch
        ck = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        return {k: v for k, v in ck.items() if k in ("config", "train_state")}
    return {}


def _uptrain_command(cfg: dict) -> str:
    keys = ["name", "num_loops", "prelude_layers", "coda_layers", "init", "lora_rank", "batch", "seq_len", "lr",
            "max_minutes", "refresh_every", "refresh_batch", "exit_weight_self", "max_tokens", "decay_tokens",
            "device", "threads", "amp", "teacher_dtype"]
    cfg = {{"head": "prelude_layers", "tail": "coda_layers"}.get(k, k): v for k, v in cfg.items()}  # older runs
    shown = {k: str(v).lower() if isinstance(v, bool) else v for k, v in cfg.items()}  # Hydra's true/false
    return "python -m traces.uptrain " + " ".join(f"{k}={shown[k]}" for k in keys if k in shown)


def _best_tf(ck: dict, N: int, meta: dict) -> str:
    rows = _curve_rows(meta)
    step = str(ck.get("train_state", {}).get("step", ""))
    row = next((r for r in rows if r["step"] == step), rows[-1] if rows else None)
    if row is None:
        return "n/a"
    per = ", ".join(f"loop {k}: {float(row[f'agree_{k}']):.3f}" for k in range(1, N + 1))
    return f"{float(row[f'agree_{N}']):.3f} at step {row['step']} ({per})"


def _minutes(ck: dict) -> str:
    elapsed = ck.get("train_state", {}).get("elapsed_s")
    return f"{float(elapsed) / 60:.1f} min" if elapsed is not None else "n/a (not recorded in this trace)"


def write_card(parquet: Path, df: pd.DataFrame, meta: dict, stats: dict, tok, ck: dict) -> Path:
    N = stats["num_loops"]
    cfg = ck.get("config", {})
    lines = [f"# Trace card: {parquet.stem}", "",
             f"Real per-token exit trace of a relaxed recursive SmolLM2-135M-Instruct, "
             f"recorded by `traces.record` (rrtsim).", "",
             "## Model", "",
             f"- {meta['model']}",
             f"- layout `{meta['layout']}`, init `{meta['init']}`, LoRA rank {meta['lora_rank']}, "
             f"{N} loops (an exit after any loop runs the unique coda layers, the final norm and the "
             f"tied LM head{'' if meta.get('exit_semantics') == 'coda' else '; traces recorded before commit edf1347 skipped the coda at intermediate exits'})",
             f"- uptrained {meta['uptrain_steps']} steps, {int(meta['uptrain_tokens']):,} tokens of "
             f"distillation (KL to the original model; weights {cfg.get('exit_weight_intermediate', 0.1):g} "
             f"intermediate / {cfg.get('exit_weight_last', 1.0):g} last loop"
             f"{', plus %g x KL(final loop || loop k) for the earlier loops' % cfg['exit_weight_self'] if cfg.get('exit_weight_self') else ''}), "
             f"embeddings frozen, on the teacher's own sampled answers to the *train* prompts",
             f"- uptraining config: `{ {k: cfg[k] for k in sorted(cfg) if k in ('batch','seq_len','lr','threads','device','temperature','refresh_every','refresh_batch','max_minutes','exit_weight_self','max_tokens','decay_tokens','amp','teacher_dtype')} }`",
             f"- uptraining command (resumable): `{_uptrain_command(cfg)}`",
             f"- uptraining wall clock: {_minutes(ck)} (shared 2-core CPU machine)",
             "", "## How it was made", "",
             f"- prompts: {meta['prompts']} (held-out: never seen by uptraining), ChatML template",
             f"- greedy decoding on the final loop, at most {meta['max_new']} new tokens per request "
             f"(stop token `<|im_end|>` included as a generated token)",
             f"- checkpoint `{meta['checkpoint']}`, commit `{meta['commit']}`, date {meta['date']}",
             f"- command: `{meta['command']}`",
             "", "## Quality", "",
             f"- {stats['tokens']:,} generated tokens from {stats['requests']} requests "
             f"(mean {stats['mean_gen_len']:.1f} tokens per request)",
             f"- final-loop top-1 agreement with the original SmolLM2 on this trace (same prefix, "
             f"the recursive model's own text): {stats['agree_teacher_final']:.3f}; on tokens "
             f"that do not repeat an earlier 4-gram of the same answer: "
             f"{stats['agree_teacher_final_fresh']:.3f} ({1 - stats['repeat_frac']:.1%} of tokens)",
             f"- **held-out teacher-forced agreement with the original (the honest quality number, "
             f"target 0.6): {_best_tf(ck, N, meta)}**",
             "",
             "**How to read this.** The agreement measured on the recursive model's own greedy text "
             "is inflated: the uptrained model is still weak and often falls into repetitive loops "
             f"({stats['repeat_frac']:.0%} of tokens complete a 4-gram already seen in the same "
             "answer), and the original model, given such a prefix, predicts the continuation of "
             "the loop too. The teacher-forced number (student run on the original model's own "
             "greedy answers to held-out prompts) is the one that says how far the model is from "
             "the original, against the 0.6 target. The exit statistics are real for this model "
             "and its text, but a well-trained model would exit on different tokens.",
             "", "| loop | agreement with final loop (correct_k) | agreement with original | mean conf | exits here |",
             "|---|---|---|---|---|"]
    for k in range(1, N + 1):
        lines.append(f"| {k} | {stats[f'agree_final_{k}']:.3f} | {stats[f'agree_teacher_{k}']:.3f} | "
                     f"{stats[f'mean_conf_{k}']:.3f} | {stats['exit_hist'][k]:,} "
                     f"({stats['exit_frac'][k]:.1%}) |")
    lines += ["", f"- mean oracle exit loop: {stats['mean_exit_loop']:.3f} of {N} "
              f"({stats['mean_exit_loop_fresh']:.3f} on non-repeating tokens; loop-1 agreement "
              f"with the final loop there {stats['agree_final_1_fresh']:.3f})",
              f"- recording speed: {stats['record_tok_s']:.1f} generated tokens/s "
              f"(student + original in lockstep, {stats['record_seconds']:.0f} s)"]
    lines += ["", "## Confidence exit: depth against accuracy", "",
              "A token leaves after the first loop whose top-1 probability reaches the threshold "
              "(the simulator's `exit=confidence`); the oracle leaves at the first loop that agrees "
              "with the final one. `agree_final`: its prediction equals the final loop's (what the "
              "simulator counts as correct); `agree_teacher`: it equals the original model's.", "",
              threshold_table(df).to_markdown(index=False, floatfmt=".3f")]
    rows = _curve_rows(meta)
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
    text, old = "\n".join(lines), path.read_text() if path.exists() else ""
    if NOTES in old:  # regenerating keeps the hand-written notes
        text += "\n" + old[old.index(NOTES):]
    path.write_text(text)
    return path


def main(argv=None):
    """Regenerate a card from a recorded trace (no re-recording):
    python -m traces.card traces/data/<name>.parquet"""
    import argparse

    import pyarrow.parquet as pq

    from .base_model import load_base
    from .stats import trace_stats
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("parquet")
    ap.add_argument("--source", default="gguf")
    a = ap.parse_args(argv)
    t = pq.read_table(a.parquet)
    meta = {k.decode(): v.decode() for k, v in t.schema.metadata.items() if not k.startswith(b"pandas")}
    df = t.to_pandas()
    stats = trace_stats(df)
    stats["record_tok_s"] = float(meta.get("record_tok_s", "nan"))
    stats["record_seconds"] = float(meta.get("record_seconds", "nan"))
    ck = run_info(meta, Path(meta.get("checkpoint", "")))
    _, tok = load_base(a.source)
    print(write_card(Path(a.parquet), df, meta, stats, tok, ck))


if __name__ == "__main__":
    main()
