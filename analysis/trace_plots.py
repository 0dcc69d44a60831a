"""Figures of the traces themselves: how deep tokens go, and what exiting early costs."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.style import LOOP_COLORS, MARKERS


def exit_histogram(ax: plt.Axes, tokens: pd.DataFrame) -> None:
    """Share of tokens by oracle exit loop, for one trace (a `load_trace_frame` table)."""
    n = tokens.attrs["num_loops"]
    share = tokens["exit_loop"].value_counts(normalize=True).reindex(range(1, n + 1), fill_value=0) * 100
    bars = ax.bar(share.index, share.values, color=LOOP_COLORS[:n], width=0.7)
    ax.bar_label(bars, fmt="%.1f%%", fontsize=8)
    ax.set_xticks(range(1, n + 1))
    ax.set_xlabel("oracle exit loop (first loop predicting the final token)")
    ax.set_ylabel("tokens (%)")
    ax.set_ylim(0, max(share.max() * 1.2, 10))
    req = tokens["request_id"].nunique()
    ax.set_title(f"{tokens.attrs['name']}\n{len(tokens):,} tokens, {req} requests, "
                 f"mean exit loop {tokens['exit_loop'].mean():.2f} of {n}")


def tradeoff(ax: plt.Axes, curve: pd.DataFrame, label: str, index: int,
             annotate: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95)) -> None:
    """Accuracy cost against mean depth as the confidence threshold varies (a
    `threshold_tradeoff` table); the oracle point is free by construction."""
    conf = curve[curve["policy"] == "confidence"].sort_values("threshold")
    line, = ax.plot(conf["mean_exit_loop"], conf["accuracy_cost"] * 100, marker=MARKERS[index % len(MARKERS)],
                    markersize=3, label=f"{label}: confidence threshold")
    last_x = -np.inf
    for t in annotate:
        row = conf.iloc[(conf["threshold"] - t).abs().argmin()]
        if row["mean_exit_loop"] - last_x < 0.06:  # labels this close would print over each other
            continue
        last_x = row["mean_exit_loop"]
        ax.annotate(f"{row['threshold']:.2f}", (row["mean_exit_loop"], row["accuracy_cost"] * 100),
                    textcoords="offset points", xytext=(4, 3), fontsize=7, color=line.get_color())
    oracle = curve[curve["policy"] == "oracle"].iloc[0]
    ax.plot(oracle["mean_exit_loop"], oracle["accuracy_cost"] * 100, marker="*", markersize=11, linestyle="none",
            color=line.get_color(), markeredgecolor="black", label=f"{label}: oracle exit")
    ax.set_xlabel("mean exit loop (loop steps per token)")
    ax.set_ylabel("accuracy cost (% tokens whose exit prediction ≠ final)")


def thresholds() -> np.ndarray:
    return np.round(np.linspace(0.0, 1.0, 41), 3)


def learning_curve(ax: plt.Axes, curve: pd.DataFrame, label: str, index: int) -> None:
    """Held-out agreement of the final loop with the original model against training
    tokens (an uptraining run's curve.csv); the final loop is the model's quality, the
    number a trace's exits rest on."""
    final = max(int(c.split("_")[1]) for c in curve.columns if c.startswith("agree_") and c[6:].isdigit())
    ax.plot(curve["tokens"].clip(lower=1), curve[f"agree_{final}"], marker=MARKERS[index % len(MARKERS)],
            markersize=4, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("uptraining tokens (distillation)")
    ax.set_ylabel("held-out top-1 agreement with the original")
