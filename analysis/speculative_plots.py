"""Self-speculative decoding beside depth-wise batching: the `speculative` figure group.

Speculation and depth-wise batching both turn the early loops' predictions into speed,
one by drafting with them, the other by letting a token leave. Which wins depends on
how often loop d is right in a row (the accepted run lengths, a property of the trace)
and on what a step costs (bandwidth-bound small batches favour verifying K tokens in
one pass). So the group has two figures: throughput against the batch for K = 1..8 and
the three baselines, per setting, and the run-length distribution of each trace.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, NullLocator

from analysis.grid import compose_run, run_grid
from analysis.style import PLAIN, THOUSANDS, save, scheduler_color, scheduler_label
from analysis.traces import trace_paths
from sim.registry import scheduler_registry
from sim.schedulers.speculative import accepted_runs, round_emits
from sim.simulation import load_run_trace
from sim.trace import Trace, load_trace

DRAFT_LENS = range(1, 9)


def baselines() -> tuple[str, ...]:
    """The schedulers speculative decoding is compared with (registry metadata `baseline_of`
    containing "speculative")."""
    return scheduler_registry.having("baseline_of", "speculative")


PAPER_REQUESTS = 8  # of 2048 tokens each: the paper's 2048 requests would not fit the figure budget
PAPER = ["trace=paper_like", "model=gemma2b_r2", f"trace.synthetic.num_requests={PAPER_REQUESTS}"]
EASY = ["trace.synthetic.exit_probs=[0.9,0.1]", "trace.synthetic.correlation=0.9"]
COMMON = ["hardware=a100_40g", "cost=roofline", "seed=0"]
# minor ticks of a log throughput axis: only 2x and 5x labelled, with thousands separators
MINOR_THOUSANDS = FuncFormatter(lambda v, _: f"{v:,.0f}" if f"{v:.0e}"[0] in "25" else "")


class Setting(NamedTuple):
    name: str
    title: str
    overrides: list[str]
    batches: list[int]


def settings() -> list[Setting]:
    n_default = load_trace().num_requests
    return [
        Setting("default", f"default trace (real 2-loop SmolLM2, {n_default} requests)", ["trace=default"],
                [1, 2, 8, 64, n_default]),
        Setting("paper_like", f"paper-like (gemma2b_r2, exits 50/50, {PAPER_REQUESTS} requests x 2048 tokens)",
                PAPER, [1, 2, 4, 8]),
        Setting("paper_like_easy", "paper-like with an easy draft (90% exit after loop 1, correlation 0.9)",
                [*PAPER, *EASY], [1, 2, 4, 8]),
    ]


def points(s: Setting) -> list[list[str]]:
    base = [*s.overrides, *COMMON]
    out = [[*base, f"scheduler={b}", f"scheduler.batch_size={n}"] for b in baselines() for n in s.batches]
    out += [[*base, "scheduler=speculative", f"scheduler.draft_len={k}", f"scheduler.batch_size={n}"]
            for k in DRAFT_LENS for n in s.batches]
    return out


def k_color(k: int) -> tuple:
    return plt.get_cmap("plasma")((k - 1) / (len(DRAFT_LENS) + 1))


def _batch_axis(ax: plt.Axes, batches: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v)}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("batch size limit (requests)")


def _draw_setting(axes: list[plt.Axes], frame: pd.DataFrame, s: Setting) -> None:
    ok = frame[frame["status"] == "ok"]
    spec = ok[ok["scheduler"] == "speculative"]
    base = {b: ok[ok["scheduler"] == b].set_index("batch_size")["throughput_tok_s"] for b in baselines()}
    thr, over_depth, over_cont = axes
    for b in base:
        thr.plot(base[b].index, base[b].values, color=scheduler_color(b), linewidth=2.2, marker="o",
                 markersize=4, label=scheduler_label(b), zorder=3)
    for k in DRAFT_LENS:
        rows = spec[spec["scheduler.draft_len"] == k].set_index("batch_size").sort_index()["throughput_tok_s"]
        style = dict(color=k_color(k), linewidth=1, marker=".", label=f"speculative K={k}")
        thr.plot(rows.index, rows.values, **style)
        over_depth.plot(rows.index, rows.values / base["depthwise"].reindex(rows.index).values, **style)
        over_cont.plot(rows.index, rows.values / base["continuous"].reindex(rows.index).values, **style)
    thr.set_yscale("log")
    thr.yaxis.set_major_formatter(THOUSANDS)
    thr.yaxis.set_minor_formatter(MINOR_THOUSANDS)
    thr.set_ylabel("throughput (tokens/s, log)")
    thr.set_title(s.title, fontsize=9, loc="left")
    for ax, name in ((over_depth, "depthwise"), (over_cont, "continuous")):
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylabel(f"speculative / {name} (x)")
        ax.yaxis.set_major_formatter(PLAIN)
        ax.set_ylim(0, max(1.2, ax.get_ylim()[1]))
    for ax in axes:
        _batch_axis(ax, s.batches)


def throughput_figure(out: Path) -> tuple[str, str, list[Path]]:
    sets = settings()
    fig, axes = plt.subplots(len(sets), 3, figsize=(13, 3.6 * len(sets)), layout="constrained", squeeze=False)
    frames = []
    for row, s in zip(axes, sets):
        frame = run_grid(points(s), desc=f"speculative {s.name}").assign(setting=s.name)
        _draw_setting(list(row), frame, s)
        frames.append(frame)
    axes[0][1].set_title("speculative over continuous depth-wise, same batch")
    axes[0][2].set_title("speculative over continuous (sequence-wise), same batch")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=6, frameon=False)
    fig.suptitle("Self-speculative decoding (draft: loop 1, K drafted tokens per round) against batching with "
                 "early exit; roofline cost, A100 40 GB")
    data = out / "data" / "speculative.csv"
    data.parent.mkdir(parents=True, exist_ok=True)
    table = pd.concat(frames, ignore_index=True)
    table.to_csv(data, index=False, float_format="%.6g")
    caption = ("Throughput of scheduler=speculative (draft_loops=1, draft_len K = 1..8, thin lines light to "
               "dark) against continuous, sync_exit and depthwise (oracle exits) across batch sizes, under the "
               "roofline cost on A100 40 GB, with the ratio to depthwise and to continuous at the same batch. "
               "Rows: the default real trace; the paper-like setting reduced to "
               f"{PAPER_REQUESTS} requests of 2048 tokens (the paper's 2048 requests would not fit the figure "
               "budget); the same with an easy draft (exit_probs [0.9, 0.1], correlation 0.9), a what-if "
               "showing the acceptance speculation needs. A draft step runs loop 1 plus the exit path (coda "
               "layers, LM head) for one token; the verify pass reads the block once for K tokens.")
    return "speculative_throughput", caption, [*save(fig, out / "speculative_throughput"), data]


def run_lengths(trace: Trace, d: int) -> np.ndarray:
    """Accepted run length of every round under an unbounded draft: the consecutive tokens
    loop d gets right from a round's start, rounds starting at each request's start and
    after each rejected draft."""
    accepted = trace.correct[:, d - 1]
    runs = accepted_runs(accepted, trace.offsets)
    starts = np.zeros(accepted.size, dtype=bool)
    starts[1:] = ~accepted[:-1]
    starts[trace.offsets[:-1]] = True
    return runs[starts]


def tokens_per_round(trace: Trace, d: int, draft_len: int) -> float:
    """Mean tokens a round emits with draft length K, replayed from the trace (every request
    from its start, rounds as scheduler=speculative runs them; the batch does not matter)."""
    runs = accepted_runs(trace.correct[:, d - 1], trace.offsets)
    pos, end = trace.offsets[:-1].copy(), trace.offsets[1:]
    rounds = 0
    while (live := pos < end).any():
        p = pos[live]
        pos[live] = p + round_emits(runs[p], np.minimum(draft_len, end[live] - p))
        rounds += int(live.sum())
    return trace.num_tokens / rounds


def run_length_figure(out: Path, cap: int = 16) -> tuple[str, str, list[Path]]:
    traces: list[tuple[str, Trace, int]] = []
    for path in trace_paths():
        t = load_trace(path)
        if t.correct is not None:
            traces += [(f"{path.stem}, d={d}", t, d) for d in range(1, t.num_loops)]
    for label, extra in (("paper-like", PAPER), ("paper-like easy draft", [*PAPER, *EASY])):
        traces.append((label, load_run_trace(compose_run([*extra, *COMMON])), 1))
    fig, (dist, surv, per_round) = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    x = np.arange(cap + 1)
    for i, (label, t, d) in enumerate(traces):
        runs = run_lengths(t, d)
        share = np.bincount(np.minimum(runs, cap), minlength=cap + 1) / runs.size * 100
        style = dict(marker="os^Dv"[i % 5], markersize=4, label=f"{label} (mean a {runs.mean():.2f})")
        dist.plot(x, np.where(share > 0, share, np.nan), **style)
        surv.plot(x[1:], [(runs >= j).mean() * 100 for j in x[1:]], **style)
        per_round.plot(list(DRAFT_LENS), [tokens_per_round(t, d, k) for k in DRAFT_LENS], **style)
    dist.set_xticks(x, [*map(str, x[:-1]), f"{cap}+"])
    dist.set_xlabel("accepted run length a (drafts right in a row before the first miss)")
    dist.set_ylabel("rounds (%, log)")
    dist.set_title("accepted run lengths, unbounded draft")
    surv.set_xticks(x[1:])
    surv.set_xlabel("j")
    surv.set_ylabel("rounds with a >= j (%, log)")
    surv.set_title("rounds accepting at least j drafts")
    for ax in (dist, surv):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(PLAIN)
    per_round.set_xlabel("draft length K (scheduler.draft_len)")
    per_round.set_ylabel("mean tokens per round")
    per_round.set_title("tokens per round (K at most; 1 at least)")
    per_round.plot(list(DRAFT_LENS), list(DRAFT_LENS), color="black", linewidth=0.8, linestyle="--",
                   label="every draft accepted")
    per_round.legend(fontsize=7)
    fig.suptitle("How far the early-loop draft gets before its first miss, per trace (correct_d from the trace)")
    caption = ("Accepted run lengths per trace. Left and middle: start a round at each request's start and after "
               "each rejected draft, and count the drafts of loop d that equal the final token in a row (an "
               "unbounded draft; a round with draft_len K accepts min(a, K)); rejections cluster, so many rounds "
               "accept nothing even where most tokens are easy. Right: mean tokens per round for K = 1..8, "
               "replayed from the trace as scheduler=speculative runs it (it equals the metric "
               "mean_tokens_per_round). Real traces: every traces/data/*.parquet with correct_k, each d < N; "
               f"paper-like: synthetic, {PAPER_REQUESTS} requests of 2048 tokens, seed 0.")
    return "speculative_run_lengths", caption, save(fig, out / "speculative_run_lengths")


def figures(out: Path) -> list[tuple[str, str, list[Path]]]:
    return [run_length_figure(out), throughput_figure(out)]
