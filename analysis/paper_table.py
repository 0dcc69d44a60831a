"""The paper's throughput table with rrtsim's numbers beside it (Markdown and CSV).

rrtsim's absolute tok/s come from an uncalibrated roofline and are not comparable
with measured ones; ratios to vanilla static are. Two rrtsim columns, because the
paper's batch sizes (Table K.1) are far below what rrtsim's memory model admits:
at the paper's batch, and at rrtsim's own memory maximum (batch limit 4096).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.grid import compose_run, run_grid
from analysis.paper import PAPER_SETTING, ROWS
from sim.model_size import non_embedding_params

SPEEDUP = "x vanilla static"  # column suffix: throughput over the first row's, same column group
MEMORY_MAX = 4096  # a batch limit no memory admits: the memory model sets the batch


def simulate_rows(base: list[str]) -> pd.DataFrame:
    """Every paper row at the paper's batch and at the memory maximum."""
    points = [[*base, *row.overrides, f"scheduler.batch_size={b}"]
              for row in ROWS for b in (row.paper_batch, MEMORY_MAX)]
    return run_grid(points, desc="paper table")


def build_table(results: pd.DataFrame, base: list[str]) -> pd.DataFrame:
    runs = results.set_index(["job"])
    rows = []
    for i, row in enumerate(ROWS):
        at_paper, at_max = runs.loc[2 * i], runs.loc[2 * i + 1]
        params = non_embedding_params(compose_run([*base, *row.overrides]).model)
        rows.append({
            "model": row.label, "params (non-emb)": f"{params / 1e9:.2f}B", "batching": row.batching,
            "exit": row.exit, "paper batch": row.paper_batch, "paper tok/s": row.paper_tok_s,
            "rrtsim tok/s, paper batch": at_paper["throughput_tok_s"],
            "rrtsim batch, memory max": int(at_max["effective_batch"]),
            "rrtsim tok/s, memory max": at_max["throughput_tok_s"],
        })
    table = pd.DataFrame(rows)
    for col in ("paper tok/s", "rrtsim tok/s, paper batch", "rrtsim tok/s, memory max"):
        table.insert(table.columns.get_loc(col) + 1, col.replace("tok/s", SPEEDUP), table[col] / table[col].iloc[0])
    return table


def write_table(table: pd.DataFrame, stem: Path, notes: list[str]) -> list[Path]:
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    table.to_csv(csv, index=False, float_format="%.4g")
    shown = table.copy()
    for col in shown.columns:
        if SPEEDUP in col:
            shown[col] = shown[col].map("{:.2f}x".format)
        elif "tok/s" in col:
            shown[col] = shown[col].map("{:,.0f}".format)
    body = shown.to_markdown(index=False)
    md.write_text("\n".join(["# Throughput: the paper's table and rrtsim\n", f"Paper setting: {PAPER_SETTING}.\n",
                             body, "", *[f"- {n}" for n in notes], ""]))
    return [md, csv]
