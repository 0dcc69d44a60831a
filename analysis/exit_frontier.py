"""The exit frontier: real speed against real output quality of confidence exits, beside the
simulator's prediction for the same points (issue 26). No torch: everything here runs from
a base install, on the CSV the real driver (`python -m traces.frontier`) wrote.

A point is one way to serve the same workload: `live` (depth-wise batching, exits decided by
the model's own confidence at a threshold, under a KV policy, free-running), and three
references: `continuous` (full depth, free-running: the speed baseline and the quality
reference), `depthwise_spec` (lossless speculation: quality 1 by construction) and `oracle`
(depth-wise with the trace's oracle exits, teacher-forced: not realizable; quality 1 by
construction). Each row's `overrides` reproduce its `sim_makespan_s` with `python -m sim.run`:
a live point is simulated as `exit=confidence` at the same threshold, which replays the
confidences the trace recorded (so it also predicts the accuracy cost).

    python -m analysis.exit_frontier               # redraw figures/exit_frontier.{png,pdf} from the CSV
    python -m analysis.exit_frontier --check       # and check every row's overrides still reproduce it
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
CSV = ROOT / "figures" / "data" / "exit_frontier.csv"
FIGURE = ROOT / "figures" / "exit_frontier"
REFERENCES = ("continuous", "depthwise_spec", "oracle")
BY_CONSTRUCTION = ("depthwise_spec", "oracle")  # quality 1: lossless, or the trace's own exits
LIVE_ACCEPT = "scheduler.accept=live"
TOLERANCE = 0.01  # a row's overrides must reproduce sim_makespan_s this closely


@dataclass(frozen=True)
class Point:
    policy: str  # live | continuous | depthwise_spec | oracle
    batch_size: int
    threshold: Optional[float] = None
    kv_policy: str = "ignore"

    @property
    def scheduler(self) -> str:
        return {"live": "depthwise", "oracle": "depthwise"}.get(self.policy, self.policy)

    @property
    def free_running(self) -> bool:
        """The oracle's exits come from the trace, so it can only be teacher-forced on it."""
        return self.policy != "oracle"

    @property
    def key(self) -> str:
        """A folder name for the point's runs."""
        tail = f"_t{self.threshold:g}_{self.kv_policy}" if self.policy == "live" else ""
        return f"{self.policy}_b{self.batch_size}{tail}"

    def run_overrides(self, base: Iterable[str] = ()) -> list[str]:
        """What `python -m traces.execute` runs for this point (free_running=true unless oracle)."""
        if self.policy == "live":
            exit_ = ["exit=live", f"exit.threshold={self.threshold:g}", f"exit.kv_policy={self.kv_policy}"]
        else:
            exit_ = ["exit=oracle" if self.policy == "oracle" else "exit=none", f"exit.kv_policy={self.kv_policy}"]
        # free-running speculation verifies the model's own drafts: the trace's acceptance
        # (scheduler.accept=trace) does not hold for tokens the trace never saw
        accept = [LIVE_ACCEPT] if self.policy == "depthwise_spec" else []
        return [*base, f"scheduler={self.scheduler}", f"scheduler.batch_size={self.batch_size}", *accept, *exit_]

    def sim_overrides(self, base: Iterable[str] = (), profile: Optional[str] = None) -> list[str]:
        """The simulator's version of the point: exit=live becomes exit=confidence (the trace's
        recorded confidences at the same threshold), live acceptance the trace's, priced by
        cost=profiled."""
        ov = [o.replace("exit=live", "exit=confidence") for o in self.run_overrides(base) if o != LIVE_ACCEPT]
        return ov + ["cost=profiled"] + ([f"cost.profile={profile}"] if profile else [])


def grid(thresholds: Iterable[float], kv_policies: Iterable[str], batches: Iterable[int],
         references: Iterable[str] = REFERENCES) -> list[Point]:
    """The references first (continuous is every batch's baseline), then thresholds x KV policies."""
    out = []
    for b in batches:
        out += [Point(r, b) for r in references]
        out += [Point("live", b, float(t), k) for k in kv_policies for t in thresholds]
    return out


def simulate(overrides: list[str]):
    """(metrics, config) of `python -m sim.run <overrides>`, in process."""
    from sim.api import compose
    from sim.simulation import simulate as run

    cfg = compose(overrides)
    cfg.progress = False
    return run(cfg).metrics, cfg


def predicted_divergence(cfg) -> dict[str, float]:
    """What the trace predicts of the output under cfg's exits, per request of its workload:
    the share of requests with no wrong exit (identical text if one wrong token is where the
    text would diverge) and the mean tokens before the first wrong exit. The real free-running
    run measures the same two things (traces.quality); a gap between them is what changes
    once the text diverges or the KV has gaps."""
    from sim.config import ExitConfig
    from sim.registry import scheduler_registry
    from sim.simulation import load_run_trace
    from sim.workload import build_workload

    trace = load_run_trace(cfg)
    sched = scheduler_registry.get(cfg.scheduler.name).impl
    honoured = sched.honours_exits and cfg.model.loops > 1
    ex = cfg.exit if honoured else ExitConfig("none", cfg.exit.kv_policy, cfg.exit.head_every_loop)
    exits, wrong = sched.token_exits(trace, ex, cfg.scheduler, cfg.model.loops)
    wl = build_workload(trace, exits, wrong, cfg.model.loops, cfg.workload, cfg.seed)
    first = [int(np.argmax(w)) if w.any() else int(w.size)
             for w in np.split(wl.wrong, wl.offsets[1:-1])]
    return {"sim_identical_share": float(np.mean([f == g for f, g in zip(first, wl.gen_len)])),
            "sim_prefix_tokens": float(np.mean(first))}


def sim_columns(point: Point, base: list[str], profile: Optional[str]) -> dict[str, Any]:
    """The simulator's prediction of one point: makespan (cost=profiled), exits, accuracy cost."""
    ov = point.sim_overrides(base, profile)
    m, cfg = simulate(ov)
    return {"overrides": " ".join(ov), "sim_makespan_s": m["makespan_s"], "sim_mean_exit_loop": m["mean_exit_loop"],
            "sim_accuracy_cost": m["accuracy_cost"], **predicted_divergence(cfg)}


def real_columns(reps: list[dict]) -> dict[str, Any]:
    """Median and spread of a point's repeated real runs (their metrics.json dicts)."""
    t = np.array([m["makespan_s"] for m in reps], float)
    med = float(np.median(t))
    first = reps[0]
    return {"real_makespan_s": med, "real_min_s": float(t.min()), "real_max_s": float(t.max()),
            "real_spread": float(t.max() / t.min() - 1), "repeats": len(t),
            "real_reps": ";".join(f"{x:.4f}" for x in t), "num_requests": first["num_requests"],
            "num_tokens": first["num_tokens"], "real_mean_exit_loop": first["mean_exit_loop"],
            "step_timer": first.get("step_timer")}


def quality_columns(point: Point, quality: Optional[dict], reference: Optional[dict]) -> dict[str, Any]:
    """traces.quality's measures of a free-running point; 1 by construction for lossless speculation
    and for the teacher-forced oracle (whose output is the trace's, by definition of its exits)."""
    if point.policy in BY_CONSTRUCTION and quality is None:
        ref_ll = reference["ref_orig_loglik"] if reference else np.nan
        return {"token_agreement": 1.0, "mean_prefix_tokens": np.nan, "identical_share": 1.0,
                "orig_loglik": ref_ll, "ref_orig_loglik": ref_ll, "quality_basis": "by construction"}
    if quality is None:
        raise ValueError(f"point {point.key}: no quality measured")
    keys = ("token_agreement", "mean_prefix_tokens", "identical_share", "orig_loglik", "ref_orig_loglik")
    return {**{k: quality[k] for k in keys}, "quality_basis": "measured"}


def collect(points: list[Point], real: dict[str, list[dict]], quality: dict[str, dict], base: list[str],
            profile: Optional[str], provenance: dict[str, Any]) -> pd.DataFrame:
    """One row per point: real speed (median of repeats) relative to continuous at the same batch,
    quality, the simulator's prediction and how far it is from real (`compare_with_sim`).
    `real[key]`: the repeats' metrics; `quality[key]`: traces.quality.measure's summary."""
    rows = []
    for p in points:
        if p.key not in real:
            continue
        ref = quality.get(Point("continuous", p.batch_size).key)
        rows.append({"policy": p.policy, "scheduler": p.scheduler, "threshold": p.threshold,
                     "kv_policy": p.kv_policy, "batch_size": p.batch_size, "free_running": p.free_running,
                     **real_columns(real[p.key]), **quality_columns(p, quality.get(p.key), ref),
                     **sim_columns(p, base, profile), "run_overrides": " ".join(p.run_overrides(base)),
                     **provenance})
    table = pd.DataFrame(rows)
    return compare_with_sim(table)


def compare_with_sim(table: pd.DataFrame) -> pd.DataFrame:
    """Item 5 of issue 26 as columns: speedups real and simulated over continuous at the same batch,
    the speed error, and the simulator's accuracy cost beside the real divergence (and the
    identical share and prefix the trace predicts beside the measured ones)."""
    t = table.copy()
    base = t[t.policy == "continuous"].set_index("batch_size")
    for col, out in (("real_makespan_s", "real_speedup"), ("sim_makespan_s", "sim_speedup")):
        t[out] = t.batch_size.map(base[col]) / t[col]
    t["speed_error"] = t.sim_makespan_s / t.real_makespan_s - 1
    t["speedup_error"] = t.sim_speedup / t.real_speedup - 1
    t["real_divergence"] = 1 - t.token_agreement
    t["divergence_gap"] = t.real_divergence - t.sim_accuracy_cost
    t["identical_gap"] = t.identical_share - t.sim_identical_share
    return t


def check(table: pd.DataFrame, tolerance: float = TOLERANCE) -> list[str]:
    """Rows whose overrides no longer reproduce their sim_makespan_s within `tolerance`."""
    bad = []
    for r in table.itertuples():
        got = simulate(r.overrides.split())[0]["makespan_s"]
        if abs(got / r.sim_makespan_s - 1) > tolerance:
            bad.append(f"{r.policy} t={r.threshold} {r.kv_policy} b={r.batch_size}: {got:.3f} s, "
                       f"the CSV says {r.sim_makespan_s:.3f} s")
    return bad


def write(table: pd.DataFrame, csv: Path = CSV) -> Path:
    csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv, index=False, float_format="%.6g")
    return csv


REF_STYLE = {"continuous": ("P", "#0072B2", "continuous, full depth (reference)"),
             "depthwise_spec": ("*", "#000000", "depth-wise speculation (lossless)"),
             "oracle": ("D", "#777777", "oracle exits (teacher-forced, not realizable)")}


def plot(table: pd.DataFrame, stem: Path = FIGURE, batch: Optional[int] = None) -> list[Path]:
    """Speedup over continuous against quality at one batch size (the smallest by default): left,
    token agreement with full depth; right, the original model's log-likelihood per token. One
    marker per KV policy (thresholds annotated; hollow: the simulator's speedup for the point),
    and the reference points."""
    from analysis.style import MARKERS, kv_color, kv_names, plt, save

    batch = int(table.batch_size.min()) if batch is None else batch
    t = table[table.batch_size == batch]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, x, xlabel in ((axes[0], "token_agreement", "token agreement with full-depth greedy output"),
                          (axes[1], "orig_loglik", "original SmolLM2-135M log-likelihood per token")):
        live = t[t.policy == "live"]
        for i, k in enumerate([k for k in kv_names() if k in set(live.kv_policy)]):
            g = live[live.kv_policy == k].sort_values("threshold")
            m = MARKERS[i % len(MARKERS)]
            ax.plot(g[x], g.real_speedup, marker=m, color=kv_color(k), lw=0.8, label=f"confidence exit, KV {k}")
            ax.scatter(g[x], g.sim_speedup, marker=m, facecolor="none", edgecolor=kv_color(k), s=22, zorder=3)
            for r in g.itertuples():
                ax.annotate(f"{r.threshold:g}", (getattr(r, x), r.real_speedup), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
        for name, (m, c, label) in REF_STYLE.items():
            g = t[t.policy == name]
            if len(g) and g[x].notna().all():
                ax.scatter(g[x], g.real_speedup, marker=m, color=c, s=70, zorder=4, label=label)
        if x == "orig_loglik":
            ref = t.ref_orig_loglik.dropna()
            if len(ref):
                ax.axvline(float(ref.iloc[0]), color="#0072B2", lw=0.8, ls=":")
        ax.axhline(1.0, color="black", lw=0.6)
        ax.set_xlabel(xlabel)
    axes[0].scatter([], [], marker="o", facecolor="none", edgecolor="black", label="simulated (exit=confidence)")
    axes[0].set_ylabel(f"speedup over continuous, batch {batch} (real)")
    axes[0].legend(fontsize=7, loc="lower left")
    cpu = t.cpu.iloc[0] if "cpu" in t and len(t) else ""
    fig.suptitle(f"Exit frontier: free-running confidence exits, {cpu}", fontsize=10)
    fig.tight_layout()
    return save(fig, stem)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.exit_frontier", description=__doc__.splitlines()[0])
    ap.add_argument("--csv", default=str(CSV))
    ap.add_argument("--figure", default=str(FIGURE))
    ap.add_argument("--batch", type=int, default=None, help="batch size to draw (default: the smallest)")
    ap.add_argument("--check", action="store_true", help="check each row's overrides reproduce sim_makespan_s")
    args = ap.parse_args(argv)
    csv = Path(args.csv)
    if not csv.is_file():
        print(f"error: {csv}: no such file (python -m traces.frontier writes it)", file=sys.stderr)
        return 2
    table = pd.read_csv(csv)
    if args.check:
        bad = check(table)
        for line in bad:
            print(f"  differs: {line}", file=sys.stderr)
        print(f"  {len(table) - len(bad)} of {len(table)} rows reproduce sim_makespan_s within {TOLERANCE:.0%}")
        if bad:
            return 1
    for p in plot(table, Path(args.figure), args.batch):
        print(f"  {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
