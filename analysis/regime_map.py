"""When does depth-wise batching pay? Its speedup across cost regimes and exit distributions.

For one recursive model, three schedulers serve the same synthetic requests:
continuous batching running every loop (no exit), synchronized exit, and continuous
depth-wise batching; the exit distribution sweeps from "everything leaves after loop
1" to "nothing exits early" (`trace.synthetic.mean_exit`). Each schedule is priced by
every cost regime at once: with all requests arriving at t=0 the schedule (which tokens
run in which step) does not depend on step times, so one simulation with a clock that
sums each regime's step times gives every regime's makespan exactly (a test checks
one point against a plain `python -m sim.run` with the point's overrides).

Memory is not bounding (`memory.limit=false`): the batch is the scheduler's, the same
on every device, so regimes differ only in what a step costs.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from tqdm import tqdm

from analysis.gpu_published import DOC, REGIME_END, REGIME_START, write_doc_block
from analysis.grid import _trace, compose_run
from analysis.style import MARKERS, PLAIN, save
from analysis.traces import REPO, trace_paths
from sim.config import CONF_DIR, RunConfig, validate
from sim.cost import CostModel, StepLoad, make_cost_model
from sim.errors import UserError
from sim.simulation import simulate
from sim.step import StepBatch, StepClock
from sim.trace import load_trace

# One line per cost regime: (label, overrides on top of a setting). Add a regime here
# and every map draws it (a setting may add keys of a regime's cost model: Setting.cost_keys); `cost=profiled` joins by itself once conf/cost/profiled.yaml exists.
REGIMES: list[tuple[str, list[str]]] = [
    ("fixed cost per step", ["cost=constant"]),
    ("cost per layer-step", ["cost=layer_step"]),
    ("roofline A100 40 GB", ["cost=roofline", "hardware=a100_40g"]),
    ("roofline H100", ["cost=roofline", "hardware=h100"]),
    ("roofline H200", ["cost=roofline", "hardware=h200"]),
]
if (CONF_DIR / "cost" / "profiled.yaml").exists():
    REGIMES.append(("profiled", ["cost=profiled"]))
REGIME_COLORS = ["#000000", "#D55E00", "#56B4E9", "#0072B2", "#003f63", "#CC79A7"]  # Okabe-Ito family
# The measured-GPU map (`gpu_settings`): step costs from Vidur's measured A100/H100 operators and
# vLLM CPU overheads (cost=gpu_profile) next to the rooflines of the same two GPUs. Solid lines
# rest on measurements, dashed ones on the roofline's assumed efficiencies.
GPU_REGIMES: list[tuple[str, list[str]]] = [
    ("roofline A100 80 GB", ["cost=roofline", "hardware=a100_80g"]),
    ("roofline H100", ["cost=roofline", "hardware=h100"]),
    ("measured A100 80 GB (Vidur)", ["cost=gpu_profile", "hardware=a100_80g"]),
    ("measured H100 (Vidur)", ["cost=gpu_profile", "hardware=h100"]),
]
GPU_STYLE = {"roofline A100 80 GB": ("#56B4E9", "--"), "roofline H100": ("#0072B2", "--"),
             "measured A100 80 GB (Vidur)": ("#E69F00", "-"), "measured H100 (Vidur)": ("#D55E00", "-")}
MEAN_EXITS = (1.0, 1.05, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0)  # dense near 1, where sync. exit turns
SCHEDULERS = ("continuous", "sync_exit", "depthwise")
BASELINES = {"continuous": "continuous batching, every loop (no exit)", "sync_exit": "synchronized exit"}


@dataclass(frozen=True)
class Setting:
    name: str
    title: str
    base: list[str]  # overrides of the synthetic runs (a 2-loop model and trace)
    real_base: list[str] | None  # overrides of runs on the recorded traces (None: none fits this model)
    batches: tuple[int, ...]
    requests_per_slot: int  # requests = requests_per_slot x batch: the batch refills several times
    min_requests: int
    # Overrides added to a regime whose overrides include the key: the setting's own values
    # of that cost model's keys (each cost model takes only its own keys, so a setting
    # cannot put them in `base` for every regime).
    cost_keys: tuple[tuple[str, tuple[str, ...]], ...] = ()
    regimes: tuple[tuple[str, list[str]], ...] | None = None  # None: REGIMES

    def regime_list(self) -> list[tuple[str, list[str]]]:
        return list(self.regimes) if self.regimes is not None else REGIMES

    def style(self, k: int, label: str) -> tuple[str, str]:
        """(colour, line style) of the setting's k-th regime."""
        if label in GPU_STYLE:
            return GPU_STYLE[label]
        return REGIME_COLORS[k % len(REGIME_COLORS)], "-"

    def regime_overrides(self, over: list[str]) -> list[str]:
        return [*over, *(k for when, keys in self.cost_keys if when in over for k in keys)]


def smollm2_lengths() -> list[str]:
    """Synthetic lengths like the default trace's: prompts lognormal around its mean,
    generated lengths uniform up to its cap with its mean."""
    t = load_trace()
    cap = int(t.gen_len.max())
    return [f"trace.synthetic.prompt_len={round(float(t.prompt_len.mean()))}", "trace.synthetic.length_dist=lognormal",
            f"trace.synthetic.gen_len={cap}",
            f"trace.synthetic.gen_len_min={max(1, round(2 * float(t.gen_len.mean())) - cap)}"]


PAPER = "+paper=gemma_a100"
SYNTHETIC_KEYS = ("prompt_len", "length_dist", "gen_len", "gen_len_min", "correlation")


def paper_setting() -> tuple[list[str], list[str]]:
    """The paper setting's trace as plain overrides of `trace=paper_like`, and its cost per
    layer-step: `+paper=gemma_a100` itself selects cost=layer_step with its fitted
    `cost.layer_s`, a key the other regimes' cost models refuse."""
    paper = compose_run([PAPER])
    syn = paper.trace.synthetic
    trace = ["trace=paper_like", *(f"trace.synthetic.{k}={getattr(syn, k)}" for k in SYNTHETIC_KEYS)]
    got = compose_run(trace).trace.synthetic
    for key in (*SYNTHETIC_KEYS, "exit_probs"):  # the same requests as the paper setting's
        if getattr(got, key) != getattr(syn, key):
            raise RuntimeError(f"regime map: trace.synthetic.{key} differs from {PAPER}'s")
    return trace, [f"cost.layer_s={paper.cost.layer_s:.6g}"]


def settings() -> list[Setting]:
    paper_trace, paper_cost = paper_setting()
    return [
        Setting("gemma", "Gemma 2B recursive (2 loops x 9 layers), paper setting: prompt 512, up to 2048 generated",
                [*paper_trace, "model=gemma2b_r2", "memory.limit=false", "seed=0"], None,
                (8, 32, 128), 4, 32, cost_keys=(("cost=layer_step", tuple(paper_cost)),)),
        Setting("smollm2", "SmolLM2-135M relaxed recursive (1 + 2 x 14 + 1 layers), lengths of the default trace",
                ["trace=paper_like", "model=smollm2_135m_r2_mc", *smollm2_lengths(), "memory.limit=false", "seed=0"],
                ["model=smollm2_135m_r2_mc", "memory.limit=false", "seed=0"], (8, 32, 128), 8, 64),
    ]


GPU_LENGTHS = ["trace.synthetic.prompt_len=512", "trace.synthetic.length_dist=fixed", "trace.synthetic.gen_len=384",
               "trace.synthetic.gen_len_min=128"]  # Vidur's vLLM workload shape: 512 in, 256 out on average


def gpu_settings() -> list[Setting]:
    """The measured-GPU map: a relaxed recursive Llama-2-7B, whose layer shape Vidur measured."""
    return [Setting("llama2_gpu", "Llama-2-7B relaxed recursive (1 + 2 x 15 + 1 layers, LoRA rank 64) on A100 "
                    "and H100: prompt 512, 128-384 generated",
                    ["trace=paper_like", "model=llama2_7b_r2_mc", *GPU_LENGTHS, "memory.limit=false", "seed=0"],
                    None, (8, 32, 128), 4, 32, regimes=tuple(GPU_REGIMES))]


class PricedSteps(StepClock):
    """A clock that runs on the first cost model and sums every model's step times."""

    needs_batch = False

    def __init__(self, costs: list[CostModel]):
        self.costs = costs
        self.totals = np.zeros(len(costs))

    def step_seconds(self, load: StepLoad, batch: StepBatch | None) -> float:
        times = [c.step_time(load) for c in self.costs]
        self.totals += times
        return times[0]


def regime_configs(setting: Setting, base: list[str]) -> list[tuple[str, list[str], RunConfig]]:
    """Each regime's config on top of `base`; a regime that cannot price this setting (a
    profiled cost without a profile of this model, say) is left out with one line."""
    out = []
    for label, over in setting.regime_list():
        over = setting.regime_overrides(over)
        cfg = compose_run([*base, *over])
        try:
            make_cost_model(cfg.cost, cfg.hardware, cfg.model)
        except UserError as exc:
            print(f"regime map: '{label}' left out for {' '.join(base)}: {exc}")
            continue
        out.append((label, over, cfg))
    return out


def price(cfg: RunConfig, regimes: list[tuple[str, list[str], RunConfig]]) -> dict[str, Any]:
    """Simulate once; each regime's throughput from its summed step times."""
    clock = PricedSteps([make_cost_model(c.cost, c.hardware, c.model) for _, _, c in regimes])
    metrics = simulate(cfg, trace=_trace(cfg), clock=clock).metrics
    if not np.isclose(metrics["makespan_s"], clock.totals[0], rtol=1e-9):  # idle time: pricing would be wrong
        raise RuntimeError(f"makespan {metrics['makespan_s']} != summed step times {clock.totals[0]}: not offline?")
    return {"mean_exit_loop": metrics["mean_exit_loop"], "num_tokens": metrics["num_tokens"],
            "throughput": {label: metrics["num_tokens"] / t for (label, _, _), t in zip(regimes, clock.totals)}}


def _price_indexed(i: int, cfg: RunConfig, regimes: list) -> tuple[int, dict[str, Any]]:
    return i, price(cfg, regimes)


def _point(base: list[str], cfg: RunConfig, scheduler: str, batch: int, requests: int,
           mean_exit: float | None, trace_path: str | None) -> tuple[list[str], RunConfig]:
    """A point's config and the overrides that compose it (`python -m sim.run` reruns it)."""
    cfg = copy.deepcopy(cfg)
    cfg.scheduler.name, cfg.scheduler.batch_size = scheduler, batch
    over = [*base, f"scheduler={scheduler}", f"scheduler.batch_size={batch}"]
    if trace_path is None:
        cfg.trace.synthetic.num_requests, cfg.trace.synthetic.mean_exit = requests, mean_exit
        over += [f"trace.synthetic.num_requests={requests}", f"trace.synthetic.mean_exit={mean_exit}"]
    else:
        cfg.workload.num_requests = requests
        over += [f"workload.num_requests={requests}"]
    return over, validate(cfg)


def two_loop_traces() -> list[Path]:
    return [p for p in trace_paths() if load_trace(p).num_loops == 2]


def simulate_map(setting: Setting, n_jobs: int | None = None) -> pd.DataFrame:
    """One row per (point, regime): throughput, with the point's overrides."""
    tasks = []  # (overrides, cfg, regimes, meta)
    regimes = regime_configs(setting, setting.base)
    base_cfg = compose_run(setting.base)
    real = []
    if setting.real_base is not None:
        for path in two_loop_traces():
            rbase = [*setting.real_base, f"trace.path={path.relative_to(CONF_DIR.parent)}"]
            real.append((path.stem, rbase, compose_run(rbase), regime_configs(setting, rbase)))
    for b in setting.batches:
        n = max(setting.requests_per_slot * b, setting.min_requests)
        for s in SCHEDULERS:
            for x in (MEAN_EXITS[:1] if s == "continuous" else MEAN_EXITS):  # no exit: x does not matter
                over, cfg = _point(setting.base, base_cfg, s, b, n, x, None)
                tasks.append((over, cfg, regimes, {"trace": "synthetic", "mean_exit_target": x}))
            for stem, rbase, rcfg, rregimes in real:
                over, cfg = _point(rbase, rcfg, s, b, n, None, str(rcfg.trace.path))
                tasks.append((over, cfg, rregimes, {"trace": stem, "mean_exit_target": None}))
    n_jobs = n_jobs or os.cpu_count() or 1
    order = sorted(range(len(tasks)), key=lambda i: tasks[i][1].scheduler.batch_size)  # slow (small) first

    results: dict[int, dict[str, Any]] = {}
    with Parallel(n_jobs=n_jobs, return_as="generator_unordered") as parallel:
        for i, res in tqdm(parallel(delayed(_price_indexed)(i, tasks[i][1], tasks[i][2]) for i in order), total=len(tasks),
                           desc=f"regime map {setting.name}", unit="run", leave=False):
            results[i] = res
    rows = []
    for i, (over, cfg, regs, meta) in enumerate(tasks):
        for label, rover, _ in regs:
            rows.append({"setting": setting.name, "batch": cfg.scheduler.batch_size, "scheduler": cfg.scheduler.name,
                         **meta, "mean_exit_loop": results[i]["mean_exit_loop"], "regime": label,
                         "throughput_tok_s": results[i]["throughput"][label], "num_tokens": results[i]["num_tokens"],
                         "overrides": " ".join([*over, *rover])})
    return pd.DataFrame(rows)


def speedups(frame: pd.DataFrame) -> pd.DataFrame:
    """Depth-wise throughput over each baseline's, per (trace, batch, regime, exit level).
    Continuous runs every loop, so one continuous run per trace and batch serves every level."""
    key = ["setting", "trace", "batch", "regime"]
    dw = frame[frame["scheduler"] == "depthwise"]
    out = dw[[*key, "mean_exit_target", "mean_exit_loop", "throughput_tok_s"]].copy()
    cont = frame[frame["scheduler"] == "continuous"].set_index(key)["throughput_tok_s"]
    out["over_continuous"] = out["throughput_tok_s"].to_numpy() / cont.loc[list(out[key].itertuples(index=False))].to_numpy()
    sync = frame[frame["scheduler"] == "sync_exit"]
    sync_key = [*key, "mean_exit_target"]
    sync_tp = sync.set_index(sync_key)["throughput_tok_s"]
    idx = [tuple(r) for r in out[sync_key].itertuples(index=False)]
    out["over_sync_exit"] = out["throughput_tok_s"].to_numpy() / sync_tp.reindex(idx).to_numpy()
    return out.reset_index(drop=True)


def headline(sp: pd.DataFrame, setting: str, at: float) -> dict[str, Any]:
    """Speedups at mean exit `at` (interpolated) and the largest batch, per regime."""
    syn = sp[(sp["setting"] == setting) & (sp["trace"] == "synthetic")]
    batch = int(syn["batch"].max())
    rows = {}
    for regime, g in syn[syn["batch"] == batch].groupby("regime", sort=False):
        g = g.sort_values("mean_exit_loop")
        rows[regime] = {b: float(np.interp(at, g["mean_exit_loop"], g[f"over_{b}"])) for b in BASELINES}
    return {"batch": batch, "at": at, "regimes": rows}


def caption_sentence(sp: pd.DataFrame, at: float = 1.4) -> str:
    """The one-sentence answer, from the data: which regime pays, and by how much."""
    h = headline(sp, "gemma", at)
    regs = h["regimes"]
    best = max(regs, key=lambda r: regs[r]["continuous"])
    roof = {r: v for r, v in regs.items() if r.startswith("roofline")}
    lo, hi = min(v["continuous"] for v in roof.values()), max(v["continuous"] for v in roof.values())
    lo_s, hi_s = min(v["sync_exit"] for v in roof.values()), max(v["sync_exit"] for v in roof.values())
    layer = regs.get("cost per layer-step")
    also = (f" ({layer['continuous']:.2f}x and {layer['sync_exit']:.2f}x with the paper's cost per layer-step)"
            if layer and best != "cost per layer-step" else "")
    return (f"Depth-wise batching pays where a step costs the same whatever it reads: with a {best} at a mean exit "
            f"of {at:g} of 2 loops and batch {h['batch']}, the Gemma-like recursive model serves "
            f"{regs[best]['continuous']:.2f}x the tokens/s of continuous batching and {regs[best]['sync_exit']:.2f}x "
            f"those of synchronized exit{also}, against {lo:.2f}-{hi:.2f}x and {lo_s:.2f}-{hi_s:.2f}x under the "
            "A100/H100/H200 rooflines.")


def gpu_caption_sentence(sp: pd.DataFrame, at: float = 1.4) -> str:
    """The one-sentence answer restated on measured GPU costs, from the data."""
    parts = []
    for batch in (8, 128):
        syn = sp[(sp["setting"] == "llama2_gpu") & (sp["trace"] == "synthetic") & (sp["batch"] == batch)]
        vals = {}
        for regime, g in syn.groupby("regime", sort=False):
            g = g.sort_values("mean_exit_loop")
            vals[regime] = [float(np.interp(at, g["mean_exit_loop"], g[f"over_{b}"])) for b in BASELINES]
        measured = " and ".join(f"{vals[r][0]:.2f}x / {vals[r][1]:.2f}x on the {r.split()[1]}" for r in vals
                                if r.startswith("measured"))
        roof = " and ".join(f"{vals[r][0]:.2f}x / {vals[r][1]:.2f}x" for r in vals if r.startswith("roofline"))
        parts.append(f"at batch {batch}, {measured} (rooflines of the same GPUs: {roof})")
    return (f"On measured GPU costs (Vidur's A100/H100 operators and vLLM CPU overheads per step), at a mean exit "
            f"of {at:g} of 2 loops, the relaxed recursive Llama-2-7B under depth-wise batching serves, over "
            f"continuous batching / over synchronized exit, " + "; ".join(parts) + ".")


def gpu_regime_maps(out: Path) -> list:
    """The figures.py group of the measured-GPU map: its own data files and caption."""
    from analysis.figures import Output  # figures imports this module: import at call time

    frame = pd.concat([simulate_map(s) for s in gpu_settings()], ignore_index=True)
    sp = speedups(frame)
    data = out / "data" / "regime_map_gpu.csv"
    data.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(data, index=False, float_format="%.6g")
    sp_path = out / "data" / "regime_map_gpu_speedups.csv"
    sp.to_csv(sp_path, index=False, float_format="%.6g")
    real_exits = {p.stem: float(load_trace(p).exit_loop.mean()) for p in two_loop_traces()}
    if out.resolve() == (REPO / "figures").resolve():  # the committed figures: restate the answer in the docs
        write_doc_block(DOC, REGIME_START, REGIME_END, gpu_caption_sentence(sp))
    outputs = []
    for s in gpu_settings():
        fig = draw(s, sp, {f"{k} (SmolLM2)": v for k, v in real_exits.items()})
        n = ", ".join(f"{max(s.requests_per_slot * b, s.min_requests)} at batch {b}" for b in s.batches)
        outputs.append(Output(f"regime_map_{s.name}", (
            f"{gpu_caption_sentence(sp)} Speedup of continuous depth-wise batching over continuous batching running "
            "every loop (top) and over synchronized exit (bottom) against the mean exit loop of synthetic traces. "
            f"{s.title}; requests {n}. Solid: cost=gpu_profile (sim/cost_gpu_profile.py, docs/gpu_costs.md: "
            "measured dense operators, attention and LoRA from bytes and FLOPs at the measured efficiencies, CPU "
            "work per step from the A100 host's table, which the H100 uses too); dashed: cost=roofline on the same "
            "GPUs. Dotted: the recorded SmolLM2 traces' mean exits. Memory not bounding; each point's overrides in "
            "data/regime_map_gpu.csv."), [*save(fig, out / f"regime_map_{s.name}"), data, sp_path]))
    return outputs


def draw(setting: Setting, sp: pd.DataFrame, marks: dict[str, float]) -> plt.Figure:
    """Rows: speedup over each baseline; columns: batch sizes; one line per regime."""
    data = sp[sp["setting"] == setting.name]
    syn, real = data[data["trace"] == "synthetic"], data[data["trace"] != "synthetic"]
    fig, axes = plt.subplots(2, len(setting.batches), figsize=(4.1 * len(setting.batches), 7.4),
                             layout="constrained", sharex=True, squeeze=False)
    labels = [label for label, _ in setting.regime_list()]
    for col, b in enumerate(setting.batches):
        for row, base in enumerate(BASELINES):
            ax = axes[row][col]
            ycol = f"over_{base}"
            for k, label in enumerate(labels):
                g = syn[(syn["batch"] == b) & (syn["regime"] == label)].sort_values("mean_exit_loop")
                color, line = setting.style(k, label)
                ax.plot(g["mean_exit_loop"], g[ycol], color=color, linestyle=line,
                        marker=MARKERS[k % len(MARKERS)], markersize=4, linewidth=1.4, label=label)
                r = real[(real["batch"] == b) & (real["regime"] == label)]
                ax.scatter(r["mean_exit_loop"], r[ycol], marker="*", s=140, color=color,
                           edgecolor="black", linewidth=0.6, zorder=5)
            for name, x in marks.items():
                ax.axvline(x, color="grey", linestyle=":", linewidth=1)
                if row == 0:
                    ax.annotate(name, (x, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -3),
                                textcoords="offset points", va="top", fontsize=7, color="dimgrey", rotation=90,
                                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
            ax.axhline(1.0, color="black", linewidth=0.7)
            ax.set_xlim(0.97, 2.03)
            ax.yaxis.set_major_formatter(PLAIN)
            ax.set_title(f"batch {b}: depth-wise over {'continuous' if base == 'continuous' else 'sync. exit'}")
            if col == 0:
                ax.set_ylabel(f"speedup over {BASELINES[base]} (x)", fontsize=8)
            if row == 1:
                ax.set_xlabel("mean exit loop (of 2)")
            else:
                top = ax.secondary_xaxis("top", functions=(lambda x: 2 - x, lambda s: 2 - s))
                top.set_xlabel("share of tokens leaving after loop 1", fontsize=8)
                top.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    handles, hlabels = axes[0][0].get_legend_handles_labels()
    if len(real):
        handles.append(plt.Line2D([], [], marker="*", color="grey", markeredgecolor="black", linestyle="", markersize=11))
        hlabels.append("recorded trace (" + ", ".join(sorted(real["trace"].unique())) + ")")
    fig.legend(handles, hlabels, loc="outside lower center", ncol=min(len(handles), 4), frameon=False)
    fig.suptitle(setting.title)
    return fig


def regime_maps(out: Path) -> list:
    """The figures.py group: one figure per setting, data and a computed caption."""
    from analysis.figures import Output  # figures imports this module: import at call time

    frames = [simulate_map(s) for s in settings()]
    frame = pd.concat(frames, ignore_index=True)
    sp = speedups(frame)
    data = out / "data" / "regime_map.csv"
    data.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(data, index=False, float_format="%.6g")
    sp.to_csv(out / "data" / "regime_map_speedups.csv", index=False, float_format="%.6g")
    paper_exit = compose_run([PAPER]).trace.synthetic.mean_exit
    real_exits = {p.stem: float(load_trace(p).exit_loop.mean()) for p in two_loop_traces()}
    skipped = [f"{p.stem} ({load_trace(p).num_loops} loops, mean exit {load_trace(p).exit_loop.mean():.2f})"
               for p in trace_paths() if load_trace(p).num_loops != 2]
    sentence = caption_sentence(sp)
    outputs = []
    for s in settings():
        marks = {"paper r=0 fit": paper_exit} if s.name == "gemma" else {}
        if s.real_base is None:
            marks.update({f"{k} (SmolLM2)": v for k, v in real_exits.items()})
        fig = draw(s, sp, marks)
        files = save(fig, out / f"regime_map_{s.name}")
        n = ", ".join(f"{max(s.requests_per_slot * b, s.min_requests)} at batch {b}" for b in s.batches)
        outputs.append(Output(f"regime_map_{s.name}", (
            f"{sentence} Speedup of continuous depth-wise batching over continuous batching running every loop "
            "(top) and over synchronized exit (bottom), all on the same recursive model, against the mean exit "
            f"loop of synthetic traces (`trace.synthetic.mean_exit`); one line per cost regime. {s.title}; "
            f"requests reduced to {n} to fit 2 cores (each refills the batch several times). Stars: the recorded "
            "2-loop traces replayed (resampled to the same request count), at their own mean exit. "
            + ("Dotted: the mean exit fitted to the paper's r=0 row, and the recorded SmolLM2 traces'. "
               if s.name == "gemma" else "")
            + (f"Left out: {', '.join(skipped)}, a 3-loop layout. " if skipped else "")
            + "Under the rooflines every exit check reads the LM head at every loop (exit.head_every_loop, the "
            "default), so with no early exit (mean 2) depth-wise falls below continuous; the fixed and layer-step "
            "costs charge heads nothing. The layer-step cost charges a prefill pass over all layers to each step "
            "that admits requests, which depth-wise batching does in more steps than iteration-level batching, "
            "and the prelude and coda layers of a middle-cycle model (SmolLM2) in almost every step. "
            + "Memory not bounding; each point's overrides in data/regime_map.csv."), [*files, data]))
    return outputs
