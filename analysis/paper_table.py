"""The paper's throughput table reproduced in the paper setting (conf/paper/gemma_a100.yaml).

Three rows calibrate the setting (analysis.paper_fit: vanilla static sets the cost per
layer, vanilla continuous the output lengths, recursive r=0 the exit distribution);
the four relaxed rows are predicted from their parameter counts and Table K.1 batch
sizes with nothing refitted. Each row is one `python -m sim.run <overrides>`, written
beside its numbers so anyone can rerun it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.grid import compose_run, run_grid
from analysis.paper import PAPER_SETTING, ROWS
from analysis.paper_fit import FITTED_ROWS, GEN_MAX, PROMPT, RECURSIVE, row_overrides
from sim.cost.layer_step import LayerStepCost
from sim.memory import KVMemory
from sim.model_size import non_embedding_params

MEMORY_MAX = 4096  # a batch limit no memory admits: the memory model sets the batch (kv_policies figure)
COLUMNS = ["row", "paper_x", "rrtsim_tok_s", "rrtsim_x", "fitted", "overrides"]


def row_name(i: int) -> str:
    row = ROWS[i]
    return f"{row.label}, {row.batching}"


def reproduce() -> pd.DataFrame:
    """One row per paper row: the issue's columns first, then diagnostics."""
    points = [row_overrides(i) for i in range(len(ROWS))]
    runs = run_grid(points, desc="paper reproduction")
    bad = runs[runs["status"] != "ok"]
    if len(bad):
        raise RuntimeError(f"paper reproduction: a row failed: {bad.iloc[0].get('error')}")
    rows = []
    for i, (row, overrides) in enumerate(zip(ROWS, points)):
        cfg = compose_run(overrides)
        memory = KVMemory(cfg.model, cfg.hardware, cfg.memory, cfg.exit.kv_policy)
        rows.append({
            "row": row_name(i), "paper_x": row.paper_tok_s / ROWS[0].paper_tok_s,
            "rrtsim_tok_s": runs.loc[i, "throughput_tok_s"], "fitted": i in FITTED_ROWS,
            "overrides": " ".join(overrides), "paper_tok_s": row.paper_tok_s,
            "params_b": non_embedding_params(cfg.model) / 1e9, "batch": row.paper_batch,
            "rrtsim_memory_max": memory.max_resident(PROMPT, GEN_MAX),
            "mean_exit_loop": runs.loc[i, "mean_exit_loop"],
            # layer-equivalents of a step running both loops' adapters, over the plain block's
            "lora_step_factor": 1 + 2 * LayerStepCost(cfg.cost, cfg.hardware, cfg.model).lora_share if cfg.model.loops > 1 else None,
        })
    table = pd.DataFrame(rows)
    table.insert(COLUMNS.index("rrtsim_x"), "rrtsim_x", table["rrtsim_tok_s"] / table["rrtsim_tok_s"].iloc[0])
    table["error"] = table["rrtsim_x"] / table["paper_x"] - 1
    r0 = table.iloc[ROWS.index(RECURSIVE)]
    # Per-slot step time the paper's numbers imply relative to r=0, if exits stayed as fitted:
    # (r0 tok/s per slot) / (row tok/s per slot). What a cost model would need to match.
    table["paper_step_factor"] = [
        (r0["paper_tok_s"] / r0["batch"]) / (t / b) if row.exit == "oracle" else None
        for row, t, b in zip(ROWS, table["paper_tok_s"], table["batch"])]
    return table


def _fmt_markdown(table: pd.DataFrame) -> str:
    shown = pd.DataFrame({
        "row": table["row"], "params (non-emb)": table["params_b"].map("{:.2f}B".format),
        "batch (K.1)": table["batch"], "rrtsim memory max": table["rrtsim_memory_max"],
        "paper tok/s": table["paper_tok_s"].map("{:,.0f}".format),
        "rrtsim tok/s": table["rrtsim_tok_s"].map("{:,.0f}".format),
        "paper x": table["paper_x"].map("{:.2f}x".format), "rrtsim x": table["rrtsim_x"].map("{:.2f}x".format),
        "error": table["error"].map("{:+.1%}".format),
        "used for": [("fit" if f else "prediction") for f in table["fitted"]],
    })
    return shown.to_markdown(index=False)


def notes(table: pd.DataFrame) -> list[str]:
    cfg = compose_run(row_overrides(0))
    syn, mem = cfg.trace.synthetic, cfg.memory
    pred = table[~table["fitted"]]
    lines = [
        "Paper numbers: Bae et al. 2024 throughput table and Table K.1 batch sizes, via a secondary extraction "
        "(approximate). rrtsim: the paper setting `+paper=gemma_a100` (conf/paper/gemma_a100.yaml, written by "
        "`python -m analysis.paper_fit --write`), oracle exits, kv_policy=ignore, seed 0; each row's exact "
        "`python -m sim.run` overrides are in figures/data/paper_reproduction.csv.",
        f"Fitted, one paper number each: `cost.layer_s={cfg.cost.layer_s:.6g}` s per decoder layer run in a step "
        f"(vanilla static row alone; an 18-layer step takes {18 * cfg.cost.layer_s * 1e3:.1f} ms); generated "
        f"lengths uniform on [{syn.gen_len_min}, {syn.gen_len}] (vanilla continuous over static); "
        f"`trace.synthetic.mean_exit={syn.mean_exit:.4g}`, i.e. {2 - syn.mean_exit:.1%} of tokens leave after "
        "loop 1 (recursive r=0 row alone). The fitted rows' errors are the fit's tolerance.",
        f"Memory (Table K.1, derived): `memory.utilization={mem.utilization:.4g}`, "
        f"`memory.request_overhead_mb={mem.request_overhead_mb:.4g}`: vanilla's 111 and r=0's 123 requests at "
        "full length (512 + 2048 tokens) exactly fill what is usable; the relaxed rows' memory maximum then "
        "follows from parameter counts ('rrtsim memory max'); each row runs at its K.1 batch.",
        "Predicted rows: " + "; ".join(f"{r.row.split(',')[0]} {r.error:+.1%}" for r in pred.itertuples()) + ".",
    ]
    worst = pred.loc[pred["error"].abs().idxmax()]
    low = pred.iloc[:2]  # the two smallest ranks
    close = abs(low["paper_tok_s"].iloc[0] / low["paper_tok_s"].iloc[1] - 1)
    over = pred["rrtsim_memory_max"] - pred["batch"]
    lines.append(
        "What the paper's setup must have had: rrtsim prices a relaxed step from parameter counts "
        "(both loops' adapters run in almost every depth-wise step: step factor "
        + ", ".join(f"{r.row.split(',')[0].split()[-1]} {r.lora_step_factor:.2f}" for r in pred.itertuples())
        + "), while the paper's throughputs imply per-slot step factors of "
        + ", ".join(f"{r.paper_step_factor:.2f}" for r in pred.itertuples())
        + f" over r=0. The largest miss is {worst['row'].split(',')[0]} ({worst['error']:+.1%}). "
        f"A factor that jumps at the smallest rank and then grows slowly (r=64 and r=128 within {close:.1%} of "
        "each other in the paper) is the signature of a fixed cost per adapter (extra unfused kernels per layer, "
        "launch-bound) plus a rank term that grows less than the parameter count: rrtsim's layer-step cost "
        "has no fixed adapter cost, so it is too fast at low rank and too slow at high rank.")
    lines.append(f"Memory: from parameter counts rrtsim admits {over.min()}-{over.max()} more requests than K.1 for "
                 "the relaxed rows, so the paper's adapters held more memory than their bf16 weights (the "
                 "throughput rows run at the K.1 batch regardless).")
    return lines


def write_table(table: pd.DataFrame, md: Path, csv: Path) -> list[Path]:
    csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv, index=False, float_format="%.6g")
    md.write_text("\n".join(["# Throughput: the paper's table reproduced by rrtsim\n",
                             f"Paper setting: {PAPER_SETTING}.\n", _fmt_markdown(table), "",
                             *[f"- {n}" for n in notes(table)], ""]))
    return [md, csv]
