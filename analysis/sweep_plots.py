"""Throughput plots of a gathered sweep table (from `analysis.gather` or `analysis.grid`).

Which plots are drawn depends on what the sweep varied: a batch-size curve needs
several batch sizes, a speedup needs a static or continuous baseline, a latency
curve needs several arrival rates. Keys swept besides the axes (a model, a KV
policy...) become line styles, so one plot compares them without hiding any.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import FuncFormatter

from analysis.style import (LINESTYLES, LOG_MINOR, MARKERS, PLAIN, THOUSANDS, save, scheduler_color, scheduler_names,
                            scheduler_label)
from sim.registry import scheduler_registry

# Override keys already shown by an axis or by colour (and their metric names).
AXIS_KEYS = {"scheduler", "scheduler.batch_size", "batch_size", "workload.rate", "rate"}


def sweep_baselines() -> tuple[str, ...]:
    """The schedulers sweeps measure speedups over (registry metadata `baseline_of`
    containing "sweep")."""
    return scheduler_registry.having("baseline_of", "sweep")


def finished(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "ok"] if "status" in frame else frame


def series_keys(frame: pd.DataFrame) -> list[str]:
    """Swept keys that vary among the points and are not an axis or the colour."""
    swept = frame.attrs.get("swept", [])
    return [k for k in swept if k not in AXIS_KEYS and k in frame and frame[k].nunique(dropna=False) > 1]


def varies(frame: pd.DataFrame, column: str) -> bool:
    return column in frame and frame[column].nunique() > 1


def context(frame: pd.DataFrame) -> str:
    """What every point shares (model, hardware), for the title."""
    parts = []
    for col in ("model", "hardware", "exit_policy"):
        if col in frame and frame[col].nunique() == 1:
            parts.append(str(frame[col].iloc[0]))
    return ", ".join(parts)


def _groups(frame: pd.DataFrame, series: list[str]) -> Iterable[tuple[str, dict[str, Any], pd.DataFrame]]:
    """(scheduler, series values, rows) in the canonical scheduler order."""
    combos = frame[series].drop_duplicates().to_dict("records") if series else [{}]
    known = scheduler_names()
    order = [s for s in known if s in set(frame["scheduler"])] + sorted(set(frame["scheduler"]) - set(known))
    for sched in order:
        for combo in combos:
            rows = frame[frame["scheduler"] == sched]
            for k, v in combo.items():
                rows = rows[rows[k] == v]
            if not rows.empty:
                yield sched, combo, rows


def _style(sched: str, combo: dict[str, Any], combos: list[dict[str, Any]], rank: int, n_sched: int) -> dict[str, Any]:
    """Colour and marker say the scheduler, line style the other swept keys. Schedulers drawn
    earlier get wider lines and larger hollow markers underneath, so where two schedulers give
    the same numbers (continuous and depth-wise often do) both stay visible."""
    i = combos.index(combo) if combo in combos else 0
    label = scheduler_label(sched) + "".join(f", {v}" for v in combo.values())
    under = n_sched - 1 - rank  # 0 for the last drawn (on top)
    return dict(color=scheduler_color(sched), linestyle=LINESTYLES[i % len(LINESTYLES)],
                marker=MARKERS[rank % len(MARKERS)], label=label, linewidth=1.2 + 1.3 * under,
                markersize=4 + 2.5 * under, markerfacecolor="none" if under else scheduler_color(sched),
                zorder=2 + rank)


def _batch_axis(ax: plt.Axes, values: pd.Series) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted(set(int(v) for v in values.dropna()))
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v)}"))
    ax.minorticks_off()
    ax.set_xlabel("batch size limit (scheduler.batch_size, requests)")
    if len(ticks) > 8:
        ax.tick_params(axis="x", labelrotation=45)


def lines(ax: plt.Axes, frame: pd.DataFrame, x: str, y: str, scale: float = 1.0, order: str | None = None) -> None:
    """One line per scheduler (colour) and series combination (style), points joined in
    the order of `order` (default: x)."""
    series = series_keys(frame)
    combos = frame[series].drop_duplicates().to_dict("records") if series else [{}]
    groups = list(_groups(frame, series))
    scheds = list(dict.fromkeys(sched for sched, _, _ in groups))
    for sched, combo, rows in groups:
        rows = rows.sort_values(order or x)
        ax.plot(rows[x], rows[y] * scale, **_style(sched, combo, combos, scheds.index(sched), len(scheds)))


def throughput_vs_batch(ax: plt.Axes, frame: pd.DataFrame) -> None:
    lines(ax, frame, "batch_size", "throughput_tok_s")
    _batch_axis(ax, frame["batch_size"])
    ax.set_ylabel("throughput (generated tokens/s)")
    ax.yaxis.set_major_formatter(THOUSANDS)
    ax.set_ylim(bottom=0)


def utilization_vs_batch(ax: plt.Axes, frame: pd.DataFrame) -> None:
    lines(ax, frame, "batch_size", "slot_utilization", scale=100)
    _batch_axis(ax, frame["batch_size"])
    ax.set_ylabel("slot utilization (% of slot-steps doing loop work)")
    ax.set_ylim(0, 105)


def speedup(frame: pd.DataFrame, baseline: dict[str, Any]) -> pd.DataFrame:
    """Each point's throughput over the baseline point that differs from it only in the
    baseline's keys (e.g. {"scheduler": "static"}: same batch size, same other keys)."""
    on = [k for k in ["batch_size", "rate", *series_keys(frame)]
          if k not in baseline and k in frame and frame[k].notna().any()]
    base = frame
    for k, v in baseline.items():
        base = base[base[k] == v]
    base = base[on + ["throughput_tok_s"]].rename(columns={"throughput_tok_s": "baseline_tok_s"})
    out = frame.merge(base, on=on, how="inner") if on else frame.assign(baseline_tok_s=base["throughput_tok_s"].iloc[0])
    out.attrs = frame.attrs
    return out.assign(speedup=out["throughput_tok_s"] / out["baseline_tok_s"])


def speedup_axes(axes: list[plt.Axes], frame: pd.DataFrame, baselines: list[dict[str, Any]]) -> None:
    """One panel per baseline: speedup vs batch size, or bars when the batch is fixed."""
    for ax, base in zip(axes, baselines):
        sp = speedup(frame, base)
        name = ", ".join(str(v) for v in base.values())
        if varies(frame, "batch_size"):
            lines(ax, sp, "batch_size", "speedup")
            _batch_axis(ax, sp["batch_size"])
        else:
            rows = list(_groups(sp, series_keys(sp)))
            labels = [scheduler_label(s) + "".join(f"\n{v}" for v in c.values()) for s, c, _ in rows]
            ax.bar(range(len(rows)), [r["speedup"].iloc[0] for _, _, r in rows],
                   color=[scheduler_color(s) for s, _, _ in rows])
            ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylabel(f"speedup over {name} (x)")
        ax.set_title(f"vs {name}")


def latency_vs_throughput(axes: list[plt.Axes], frame: pd.DataFrame) -> None:
    """Online serving: each point an arrival rate (joined in rate order: past saturation
    the achieved throughput can fall back); p50 and p99 end-to-end latency."""
    for ax, q in zip(axes, ("p50", "p99")):
        lines(ax, frame, "throughput_tok_s", f"e2e_{q}_s", order="rate")
        ax.set_xlabel("achieved throughput (generated tokens/s)")
        ax.xaxis.set_major_formatter(THOUSANDS)
        ax.set_ylabel(f"end-to-end latency {q} (s)")
        values = finished(frame)[f"e2e_{q}_s"]
        if values.max() > 10 * values.min():  # a log axis only where latencies span decades
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(PLAIN)
            ax.yaxis.set_minor_formatter(LOG_MINOR)
        for row in finished(frame).itertuples():  # each point's arrival rate, requests/s
            ax.annotate(f"{row.rate:g}", (row.throughput_tok_s, getattr(row, f"e2e_{q}_s")),
                        textcoords="offset points", xytext=(3, -8), fontsize=6, color=scheduler_color(row.scheduler))
        ax.set_title(f"{q} request latency as the arrival rate grows (labels: requests/s)")


def legend_below(fig: plt.Figure, ax: plt.Axes) -> None:
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), frameon=False)


def plot_sweep(frame: pd.DataFrame, out_dir: str | Path, prefix: str = "") -> list[Path]:
    """Draw the plots the sweep's swept keys make meaningful; return the files written."""
    ok = finished(frame)
    out_dir = Path(out_dir)
    written: list[Path] = []
    if ok.empty or "scheduler" not in ok:
        return written
    title = context(ok)
    if varies(ok, "batch_size"):
        for name, draw in (("throughput_vs_batch", throughput_vs_batch),
                           ("slot_utilization", utilization_vs_batch)):
            fig, ax = plt.subplots(figsize=(6, 4.2), layout="constrained")
            draw(ax, ok)
            ax.set_title(title)
            legend_below(fig, ax)
            written += save(fig, out_dir / f"{prefix}{name}", formats=("png",))
    baselines = [{"scheduler": b} for b in sweep_baselines() if b in set(ok["scheduler"])]
    # Under an arrival-rate sweep the offered load, not the scheduler, sets the throughput
    # below saturation: a throughput ratio would mislead, the latency plot says it instead.
    if baselines and ok["scheduler"].nunique() > 1 and not varies(ok, "rate"):
        fig, axes = plt.subplots(1, len(baselines), figsize=(5.5 * len(baselines), 4.2),
                                 layout="constrained", squeeze=False)
        speedup_axes(list(axes[0]), ok, baselines)
        fig.suptitle(f"throughput speedup, {title}")
        if varies(ok, "batch_size"):
            legend_below(fig, axes[0][0])
        written += save(fig, out_dir / f"{prefix}speedup", formats=("png",))
    if varies(ok, "rate"):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
        latency_vs_throughput(list(axes), ok)
        fig.suptitle(f"online serving (Poisson arrivals), {title}")
        legend_below(fig, axes[0])
        written += save(fig, out_dir / f"{prefix}latency_vs_throughput", formats=("png",))
    return written
