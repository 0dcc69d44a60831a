"""`python -m analysis.figures`: regenerate every figure and table of the study into figures/.

figures/ of the working directory (or --out): run from the repository root, that is the
committed figures/, which this command rewrites on purpose; with an installed package,
the outputs go where the command is run, never into site-packages.

Everything is simulated from scratch with fixed seeds (seed=0), on all local cores,
and written as PNG and PDF with a figures/README.md that records each file's
caption and the commit, command and date that made it. Request counts are reduced
where the paper's 2048 would not fit the 10-minute budget on 2 cores; the captions
and table notes say so. New traces in traces/data/*.parquet are picked up as they
appear.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from tqdm import tqdm

from analysis import speculative_plots, sweep_plots, timeline
from analysis.grid import compose_run, run_grid
from analysis.output import Output
from analysis.paper_table import MEMORY_MAX, reproduce, write_table
from analysis.regime_map import gpu_regime_maps, regime_maps
from analysis.style import PLAIN, THOUSANDS, kv_color, kv_names, save, scheduler_label
from analysis.trace_plots import exit_histogram, learning_curve, thresholds, tradeoff
from analysis.traces import RECORDED, REPO, load_trace_frame, threshold_tradeoff, trace_paths
from sim.registry import scheduler_registry
from sim.simulation import simulate
from sim.trace import load_trace
from sim.trace_io import git_commit

OUT = Path("figures")  # relative: under the working directory (see the module docstring)
CURVES = RECORDED / "curves"  # uptraining curves of the bundled models and the probes beside them
CURVE_LABELS = {"r2_mc_r64": "2 loops, middle-cycle (validation trace)", "r3_mc_r64": "3 loops, middle-cycle",
                "r2_cycle_r64": "2 loops, plain cycle", "r2_mc_lr1e3": "2 loops, middle-cycle, lr 1e-3",
                "r2_mc_frozen": "2 loops, middle-cycle, shared block frozen",
                "r2_mc_r64_amx": "batch 8, bf16 on AMX (previous default)",
                "r2_mc_r64_fp32": "batch 8, fp32", "r2_mc_r64_bf16": "batch 8, bf16",
                "r2_mc_r64_b2": "batch 2, bf16 (default trace)"}
SEED = "seed=0"
PAPER = ["trace=paper_like", "hardware=a100_40g", SEED]
SMOL = ["trace=default", "hardware=a100_40g", SEED]
SMOL_MODEL = "smollm2_135m_r2_mc"  # the layout of the default trace (conf/config.yaml)
PAPER_SWEEP_REQUESTS = 256  # the paper ran 2048; 256 keeps the batch sweep within budget
PAPER_TABLE_REQUESTS = 2048  # the paper's count: the table compares against it


def trace_figures(out: Path) -> list[Output]:
    frames = [load_trace_frame(p) for p in trace_paths()]
    fig, axes = plt.subplots(1, len(frames), figsize=(4.2 * len(frames), 3.6), layout="constrained", squeeze=False)
    for ax, tokens in zip(axes[0], frames):
        exit_histogram(ax, tokens)
    hist = Output("exit_histograms", "Share of generated tokens by oracle exit loop, one panel per trace "
                  "(the bundled default trace and every traces/data/*.parquet).", save(fig, out / "exit_histograms"))
    fig, ax = plt.subplots(figsize=(6, 4.2), layout="constrained")
    with_conf = [p for p in trace_paths() if load_trace(p).conf is not None]
    for i, path in enumerate(with_conf):
        trace = load_trace(path)
        tradeoff(ax, threshold_tradeoff(trace, thresholds()), load_trace_frame(path).attrs["name"], i)
    ax.legend(loc="upper right")
    ax.set_title("Confidence exit: compute against accuracy (labels: threshold)")
    trade = Output("threshold_tradeoff", "Accuracy cost (share of tokens whose exit prediction differs from "
                   "the final loop's) against mean exit loop as the confidence threshold goes from 0 to 1 in "
                   "steps of 0.025; the star is the oracle exit (no cost by construction). Traces without "
                   "conf_k columns are left out.", save(fig, out / "threshold_tradeoff"))
    return [hist, trade]


def uptraining_figure(out: Path) -> list[Output]:
    runs = sorted(CURVES.glob("*.csv"))
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    for i, path in enumerate(runs):
        curve = pd.read_csv(path)
        label = f"{path.stem}: {CURVE_LABELS[path.stem]}" if path.stem in CURVE_LABELS else path.stem
        learning_curve(ax, curve[curve["tokens"] > 0], label, i)
    ax.axhline(0.6, color="black", linestyle="--", linewidth=0.8, label="target 0.6")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Uptraining relaxed recursive SmolLM2-135M on 2 CPU cores")
    return [Output("uptraining_curves", "Held-out teacher-forced top-1 agreement of the final loop with the "
                   "original SmolLM2-135M (16 held-out prompts, the original's greedy answers) against "
                   "distillation tokens, one line per uptraining run (traces/data/curves/*.csv, copied from "
                   "runs/uptrain/<run>/curve.csv; docs/uptraining_history.md says what each run changes).",
                   save(fig, out / "uptraining_curves"))]


def grid_schedulers() -> list[str]:
    """The schedulers of the batch and latency grids: every registered one but those that
    registered a figure group of their own (`figures=GROUP`). `speculative` is one: it
    ignores exits and has knobs of its own (K, d) these grids would pin at one value, so
    its group (`--only speculative`) compares it with the batching schedulers instead."""
    return list(scheduler_registry.having("figures", None))


def batch_sweep(out: Path, name: str, base: list[str], recursive: str, vanilla: str, batches: list[int],
                title: str, caption: str, baselines: tuple[str, ...] | None = None) -> list[Output]:
    """The grid's schedulers on the recursive model, the sweep baselines (static and
    continuous: `sweep_plots.sweep_baselines`) on the vanilla one; speedups over the vanilla
    model's `baselines` (default: all of them) at the same batch limit."""
    on_vanilla = sweep_plots.sweep_baselines()
    baselines = on_vanilla if baselines is None else baselines
    points = [[*base, f"model={recursive}", f"scheduler={s}", f"scheduler.batch_size={b}"]
              for s in grid_schedulers() for b in batches]
    points += [[*base, f"model={vanilla}", f"scheduler={s}", f"scheduler.batch_size={b}"]
               for s in on_vanilla for b in batches]
    frame = run_grid(points, desc=name)
    ok = sweep_plots.finished(frame)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), layout="constrained")
    axes = list(axes.flat)
    sweep_plots.throughput_vs_batch(axes[0], ok)
    axes[0].set_title("throughput")
    sweep_plots.utilization_vs_batch(axes[1], ok)
    axes[1].set_title("slot utilization")
    speed_axes = axes[2:2 + len(baselines)]
    sweep_plots.speedup_axes(speed_axes, ok, [{"scheduler": s, "model": vanilla} for s in baselines])
    for ax, s in zip(speed_axes, baselines):
        ax.set_title(f"speedup over vanilla {scheduler_label(s)} at the same batch limit")
        ax.set_ylabel(f"speedup over {vanilla} {s} (x)")
    if len(baselines) < 2:  # the free panel holds the legend
        axes[3].axis("off")
        handles, labels = axes[0].get_legend_handles_labels()
        axes[3].legend(handles, labels, loc="center", frameon=False)
    else:
        sweep_plots.legend_below(fig, axes[0])
    fig.suptitle(title)
    data = out / "data" / f"{name}.csv"
    data.parent.mkdir(exist_ok=True)
    frame.to_csv(data, index=False, float_format="%.6g")
    return [Output(name, caption, [*save(fig, out / name), data])]


def smollm2_sweep(out: Path) -> list[Output]:
    requests = load_trace().num_requests  # the default trace; the last batch holds all of them
    return batch_sweep(
        out, "throughput_vs_batch_smollm2", SMOL, SMOL_MODEL, "smollm2_135m_vanilla",
        [1, 2, 4, 8, 16, 32, 64, 128, requests],
        "SmolLM2-135M: relaxed recursive 1 + 2x14 + 1 (solid) and vanilla 30 layers (dashed), "
        "default trace, A100 40 GB",
        "Throughput, slot utilization and speedup against the batch size limit for SmolLM2-135M on the "
        f"bundled default trace (real exits of the uptrained 2-loop model, {requests} requests; at batch "
        f"{requests} all are resident from the start).")


def paper_table(out: Path) -> list[Output]:
    table = reproduce()
    files = write_table(table, out / "throughput_table.md", out / "data" / "paper_reproduction.csv")
    pred = table[~table["fitted"]]
    return [Output("throughput_table", "The paper's throughput table reproduced in the paper setting "
                   "(+paper=gemma_a100: cost per layer-step fitted on vanilla static, output lengths on vanilla "
                   "continuous, exits on recursive r=0; 2048 requests): fitted rows within "
                   f"{table[table['fitted']]['error'].abs().max():.1%}, relaxed rows predicted with errors "
                   + ", ".join(f"{e:+.1%}" for e in pred["error"]) + " (r=64..512).", files)]


def timeline_figure(out: Path, slots: int = 16, steps: int = 40) -> list[Output]:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained", sharey=True)
    for ax, sched in zip(axes, ("sync_exit", "depthwise")):
        cfg = compose_run([*SMOL, f"scheduler={sched}", f"scheduler.batch_size={slots}"])
        result = simulate(cfg, timeline_steps=steps)
        timeline.draw(ax, result.timeline, cfg.model.loops, sched)
    axes[1].set_ylabel("")
    fig.legend(handles=timeline.legend_handles(cfg.model.loops), loc="outside lower center", ncol=4, frameon=False)
    fig.suptitle(f"The synchronization problem: {slots} slots, first {steps} loop steps "
                 f"({cfg.model.name}, default trace, oracle exits)")
    return [Output("timeline", "Which loop each batch slot runs in each engine loop step. Synchronized exit: "
                   "a token that exits early idles (white) until the deepest token of its iteration is done. "
                   "Depth-wise: the slot starts its request's next token at loop 1 in the next step.",
                   save(fig, out / "timeline"))]


def kv_figure(out: Path) -> list[Output]:
    settings = [("gemma2b_r2, paper-like, memory-bound batch",
                 [*PAPER, f"trace.synthetic.num_requests={PAPER_TABLE_REQUESTS}", "model=gemma2b_r2",
                  f"scheduler.batch_size={MEMORY_MAX}"]),
                (f"{SMOL_MODEL}, default trace, batch 64", [*SMOL, "scheduler.batch_size=64"])]
    points = [[*base, "scheduler=depthwise", f"exit.kv_policy={kv}"] for _, base in settings for kv in kv_names()]
    frame = run_grid(points, desc="kv policies")
    fig, axes = plt.subplots(len(settings), 3, figsize=(12, 3.6 * len(settings)), layout="constrained")
    panels = [("throughput_tok_s", 1, "throughput (generated tokens/s)", "{:,.0f}"),
              ("peak_kv_bytes", 1e-9, "peak KV cache (GB)", "{:.3g}"),
              ("effective_batch", 1, "effective batch (requests resident)", "{:,.0f}")]
    for r, (label, _) in enumerate(settings):
        rows = frame.iloc[r * len(kv_names()):(r + 1) * len(kv_names())]
        for ax, (col, scale, ylabel, fmt) in zip(axes[r], panels):
            bars = ax.bar(rows["exit.kv_policy"], rows[col] * scale, color=[kv_color(k) for k in rows["exit.kv_policy"]])
            ax.bar_label(bars, fmt=fmt, fontsize=7)
            ax.yaxis.set_major_formatter(THOUSANDS if fmt.startswith("{:,") else PLAIN)
            ax.set_ylim(0, (rows[col] * scale).max() * 1.15)
            ax.set_ylabel(ylabel)
            ax.set_xlabel("exit.kv_policy")
            ax.set_title(label, fontsize=9)
            if col == "peak_kv_bytes":
                cap = rows["kv_capacity_bytes"].iloc[0] * scale
                if cap < 2 * ax.get_ylim()[1]:
                    ax.axhline(cap, color="black", linestyle="--", linewidth=0.8, label="KV capacity")
                    ax.set_ylim(0, cap * 1.3)
                    ax.legend(loc="upper center", ncol=1)
    fig.suptitle("KV policies for exited tokens under depth-wise batching (oracle exits)")
    data = out / "data" / "kv_policies.csv"
    frame.to_csv(data, index=False, float_format="%.6g")
    return [Output("kv_policies", "Depth-wise batching with each KV policy: throughput, peak KV memory and "
                   f"the batch memory admits. Top: paper-like Gemma, {PAPER_TABLE_REQUESTS} requests, batch "
                   "limited by memory only (share keeps one loop's KV, so more requests fit). Bottom: SmolLM2 "
                   "default trace at batch 64, where memory never binds and only compute differs. With share, "
                   "about 1,400 of the 2,048 requests fit at once, so a full wave is followed by a smaller one.",
                   [*save(fig, out / "kv_policies"), data])]


def latency_figure(out: Path) -> list[Output]:
    rates = [100, 200, 400, 600, 800, 1000, 1200]
    points = [[*SMOL, "workload=poisson", f"workload.rate={r}", "workload.num_requests=1000",
               f"scheduler={s}", "scheduler.batch_size=64"] for s in grid_schedulers() for r in rates]
    frame = run_grid(points, desc="poisson")
    ok = sweep_plots.finished(frame)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    sweep_plots.latency_vs_throughput(list(axes), ok)
    sweep_plots.legend_below(fig, axes[0])
    fig.suptitle(f"Online serving, Poisson arrivals {rates[0]}-{rates[-1]} requests/s, batch 64 "
                 f"({ok['model'].iloc[0]}, default trace resampled to 1000 requests)")
    data = out / "data" / "latency.csv"
    frame.to_csv(data, index=False, float_format="%.6g")
    return [Output("latency_vs_throughput", "End-to-end request latency (p50, p99) against achieved "
                   "throughput; each point is one Poisson arrival rate.", [*save(fig, out / "latency_vs_throughput"), data])]


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def readme_provenance() -> list[str]:
    """Taken when the run starts: the code that made the figures, not whatever a
    concurrent commit made HEAD by the time they were written."""
    dirty = _git("status", "--porcelain", "--", "sim", "analysis", "conf")
    commit = git_commit() + (" (with uncommitted changes in sim/ analysis/ conf/)" if dirty else "")
    return [f"- commit: `{commit}`",
            f"- command: `{' '.join(['python -m analysis.figures', *sys.argv[1:]])}`",
            f"- date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}"]


def write_readme(out: Path, outputs: list[Output], made: list[str], elapsed: float) -> Path:
    lines = ["# Figures", "",
             "Generated by `python -m analysis.figures`; do not edit by hand (rerun instead).", "",
             *made, f"- wall time: {elapsed:.0f} s on {os.cpu_count()} CPU cores", ""]
    for o in outputs:
        files = ", ".join(f"[{f.name}]({f.relative_to(out)})" for f in o.files)
        lines += [f"## {o.name}", "", o.caption, "", files, ""]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path


FIGURES = {
    "traces": trace_figures,
    "uptraining": uptraining_figure,
    "paper_like": lambda out: batch_sweep(
        out, "throughput_vs_batch_paper_like",
        [*PAPER, f"trace.synthetic.num_requests={PAPER_SWEEP_REQUESTS}"], "gemma2b_r2", "gemma2b_vanilla",
        [16, 32, 64, 128, 256],
        f"Paper-like setting: Gemma 2B family on A100 40 GB, prompt 512, 2048 generated, "
        f"{PAPER_SWEEP_REQUESTS} requests",
        "Throughput, slot utilization and speedup against the batch size limit on the paper-like setting "
        f"(synthetic trace, exits 50/50 over 2 loops, {PAPER_SWEEP_REQUESTS} requests instead of the paper's "
        "2048 to fit the time budget; all are resident at batch 256, below the memory limit of about 700). "
        "Solid: recursive gemma2b_r2; dashed: vanilla gemma2b_vanilla. Every request generates exactly 2048 "
        "tokens, so static and continuous batching coincide (their lines overlap) and one speedup panel "
        "serves both.", baselines=("static",)),
    "smollm2": smollm2_sweep,
    "table": paper_table,
    "regime": regime_maps,
    "regime_gpu": gpu_regime_maps,
    "timeline": timeline_figure,
    "kv": kv_figure,
    "latency": latency_figure,
    "speculative": lambda out: [Output(*o) for o in speculative_plots.figures(out)],
}


# The files each group writes into figures/ (stems; PNG and PDF, or .md for tables), so that
# `--only` takes the file names the README lists as well as the group names.
# tests/analysis/test_figures.py checks this against the files in figures/.
GROUP_FILES = {
    "traces": ["exit_histograms", "threshold_tradeoff"],
    "uptraining": ["uptraining_curves"],
    "paper_like": ["throughput_vs_batch_paper_like"],
    "smollm2": ["throughput_vs_batch_smollm2"],
    "table": ["throughput_table"],
    "regime": ["regime_map_gemma", "regime_map_smollm2"],
    "regime_gpu": ["regime_map_llama2_gpu"],
    "timeline": ["timeline"],
    "kv": ["kv_policies"],
    "latency": ["latency_vs_throughput"],
    "speculative": ["speculative_throughput", "speculative_run_lengths"],
}
FILE_GROUP = {stem: group for group, stems in GROUP_FILES.items() for stem in stems}
# Figures written by other commands, with the command that regenerates them.
OTHER_FILES = {"sim_vs_real": "python -m traces.validate (needs the traces extra and minutes of quiet CPU)"}


def _group(name: str) -> str:
    """A group name, or the file name (with or without its suffix) of a figure it writes."""
    stem = Path(name).stem if Path(name).suffix in (".png", ".pdf", ".md", ".csv") else name
    if stem in FIGURES:
        return stem
    if stem in FILE_GROUP:
        return FILE_GROUP[stem]
    if stem in OTHER_FILES:
        raise argparse.ArgumentTypeError(f"{name} is written by {OTHER_FILES[stem]}")
    raise argparse.ArgumentTypeError(f"unknown figure {name!r}; groups and their files:\n{_listing()}")


def _listing() -> str:
    return "\n".join(f"  {g}: {', '.join(GROUP_FILES[g])}" for g in FIGURES)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"groups (--only GROUP or --only FILE):\n{_listing()}")
    parser.add_argument("--out", type=Path, default=OUT,
                        help="output folder (default: figures/ under the working directory)")
    parser.add_argument("--only", nargs="+", type=_group, metavar="NAME",
                        help="regenerate only these groups or files, e.g. timeline or exit_histograms (no README)")
    args = parser.parse_args(argv)
    if args.only:
        args.only = list(dict.fromkeys(args.only))
    start, made = time.perf_counter(), readme_provenance()
    args.out.mkdir(parents=True, exist_ok=True)
    outputs: list[Output] = []
    names = args.only or list(FIGURES)
    for name in tqdm(names, desc="figures", unit="figure"):
        outputs += FIGURES[name](args.out)
    elapsed = time.perf_counter() - start
    if not args.only:
        write_readme(args.out, outputs, made, elapsed)
    for o in outputs:
        print(f"{o.name}: {', '.join(str(f) for f in o.files)}")
    print(f"done in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
