"""Measured GPU operator times (Vidur's profiles, bundled in sim/profiles/vidur/), as curves.

Vidur (microsoft/vidur, MIT) timed each non-attention operator of one decoder layer on A100 and
H100 for 1 to 4096 tokens, and a vLLM-style serving loop's per-step CPU work on an A100 host for
batches of 8 to 128. The files are bundled unchanged (sim/profiles/vidur/README.md: source paths,
commits, licence); this module reads them with pandas (no torch) and turns each into a `Curve`
in seconds over a count (tokens or batch size).

Why a curve per table and not a fit: the tables are dense in the count (every 8 tokens up to
4096), so linear interpolation between measured rows is as close to the measurement as the
measurement's own noise; a fitted form would smooth away the flat weight-bound region that
decides whether batching more rows into one step is free.

Out of the measured range, one rule for every table: below the smallest count, the smallest
count's time (clamped: the flat weight-bound region for operators, the fixed part for CPU
work); above the largest, the straight line through the smallest and the largest measured
point (extrapolated: both are nearly linear at the top: compute-bound GEMMs, per-request CPU
work). Each table warns once per process when it leaves its range.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from sim.errors import ConfigError

VIDUR_DIR = Path(__file__).resolve().parent / "profiles" / "vidur"
# The per-layer operators Vidur timed and sums into a layer (vidur/entities/execution_time.py:
# each once per layer); phi-2's parallel block has no post_attention_layernorm column.
DENSE_OPS = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
             "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
PROJECTIONS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")  # the layer's weights
# What Vidur charges per step as CPU overhead (means), as reference.md and the issue sum them,
# in two groups: what the engine does to start a forward pass over a batch (schedule it, prepare
# its inputs) and what it does with the rows that produce logits (sample, process the outputs).
# ray_comm_time (Ray messaging of Vidur's multi-worker vLLM fork, 0.2-1.0 ms at TP 1) is left out.
CPU_PASS = ("schedule_mean", "prepare_inputs_e2e_mean")
CPU_SAMPLED = ("sampler_e2e_mean", "process_model_outputs_mean")
# profile column -> ModelConfig field: the layer shape a profile was measured at
SHAPE = (("n_embd", "d_model"), ("n_head", "n_heads"), ("n_kv_head", "n_kv_heads"),
         ("n_expanded_embd", "d_mlp"), ("use_gated_mlp", "gated_mlp"))


@dataclass(frozen=True)
class GpuProfile:
    name: str
    hardware: str  # the conf/hardware/ option of the GPU it was measured on
    device: str
    compute_dir: str  # under VIDUR_DIR: <org>/<model>/mlp.csv per measured model


# Vidur profiled an A100 80 GB and an H100 (its paper: DGX A100 80 GB, DGX H100). Only the A100
# host's CPU overheads were published: the H100 uses them too (host-side work, GPU-independent to
# first order; an H100 host's newer CPU would if anything be faster, so H100 steps are priced
# conservatively).
PROFILES = {
    "a100": GpuProfile("a100", "a100_80g", "A100 SXM 80 GB", "compute/a100"),
    "h100": GpuProfile("h100", "h100", "H100 SXM 80 GB", "compute/h100"),
}
CPU_OVERHEADS = "cpu_overheads/a100.csv"
_WARNED: set[str] = set()


def warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        print(f"warning: {message}", file=sys.stderr)


class Curve:
    """Seconds against a count, linear between measured rows (duplicate counts averaged);
    clamped below the smallest count and extrapolated above the largest (module docstring)."""

    def __init__(self, name: str, counts: np.ndarray, seconds: np.ndarray):
        frame = pd.DataFrame({"n": counts, "s": seconds}).groupby("n", sort=True)["s"].mean()
        self.name = name
        self.counts = frame.index.to_numpy(dtype=float)
        self.seconds = frame.to_numpy(dtype=float)
        lo, hi = self.counts[0], self.counts[-1]
        self.slope = (self.seconds[-1] - self.seconds[0]) / (hi - lo)

    def __call__(self, n: float) -> float:
        lo, hi = self.counts[0], self.counts[-1]
        if n < lo:
            warn_once(f"{self.name}:low", f"{self.name}: {n:g} is below the measured {lo:g}; clamped to "
                                          f"the time at {lo:g} (further cases not reported)")
            return float(self.seconds[0])
        if n > hi:
            warn_once(f"{self.name}:high", f"{self.name}: {n:g} is beyond the measured {hi:g}; extrapolated "
                                           f"along the line through the smallest and largest measured point "
                                           f"(further cases not reported)")
            return float(self.seconds[-1] + self.slope * (n - hi))
        return float(np.interp(n, self.counts, self.seconds))


@dataclass(frozen=True)
class MeasuredModel:
    """One measured model of a profile, at tensor-parallel degree 1."""

    key: str  # <org>/<model> as Vidur names it
    shape: dict  # ModelConfig field -> value
    dense: Curve  # one decoder layer's operators, summed
    projections: Curve  # its four weight matmuls (QKV, O, up, down), summed
    up_proj: Curve  # the MLP up (gate+up) projection alone
    norm: Curve  # one layer norm
    embedding: Curve  # the embedding lookup (once per forward)
    smallest_kernel_s: float  # the shortest median of any per-layer operator measured


def describe_shape(shape: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in shape.items())


def _column(frame: pd.DataFrame, op: str) -> np.ndarray:
    return frame[f"time_stats.{op}.median"].to_numpy(dtype=float) * 1e-3  # ms -> s


@lru_cache(maxsize=None)
def measured_models(profile: str) -> tuple[MeasuredModel, ...]:
    """Every model measured in a profile (read once per process)."""
    prof = PROFILES[profile]
    models = []
    for path in sorted((VIDUR_DIR / prof.compute_dir).glob("*/*/mlp.csv")):
        key = f"{path.parent.parent.name}/{path.parent.name}"
        raw = pd.read_csv(path)
        frame = raw[raw["num_tensor_parallel_workers"] == 1]
        first = frame.iloc[0]
        shape = {field: (bool(first[col]) if field == "gated_mlp" else int(first[col])) for col, field in SHAPE}
        shape["head_dim"] = shape["d_model"] // shape["n_heads"]
        tokens = frame["num_tokens"].to_numpy()
        ops = [op for op in DENSE_OPS if f"time_stats.{op}.median" in frame]
        name = f"{profile} {key}"

        def curve(what: str, cols) -> Curve:
            return Curve(f"{name} {what}", tokens, sum(_column(frame, c) for c in cols))

        models.append(MeasuredModel(
            key, shape, curve("layer (tokens)", ops), curve("projections (tokens)", PROJECTIONS),
            curve("mlp_up_proj (tokens)", ["mlp_up_proj"]), curve("layer norm (tokens)", ["input_layernorm"]),
            curve("embedding (tokens)", ["emb"]), float(min(_column(frame, op).min() for op in ops))))
    return tuple(models)


@lru_cache(maxsize=None)
def cpu_overheads(model_key: str) -> tuple[Curve, Curve]:
    """Per-step CPU time of the serving loop by batch size, for one measured model at TP 1: the
    (schedule + prepare inputs, sample + process outputs) parts."""
    raw = pd.read_csv(VIDUR_DIR / CPU_OVERHEADS)
    rows = raw[(raw["model_name"] == model_key) & (raw["tensor_parallel_degree"] == 1)]
    if rows.empty:
        have = sorted(raw.loc[raw["tensor_parallel_degree"] == 1, "model_name"].unique())
        raise ConfigError(f"no measured CPU overheads for {model_key} at TP 1 (measured: {', '.join(have)}); "
                          "cost.cpu_overhead=false prices the GPU alone")
    batch = rows["batch_size"].to_numpy()
    return tuple(Curve(f"CPU {what} {model_key} (batch size)", batch,
                       sum(rows[c].to_numpy(dtype=float) for c in cols) * 1e-3)
                 for what, cols in (("schedule + prepare inputs", CPU_PASS), ("sample + outputs", CPU_SAMPLED)))


def profile_names() -> str:
    return ", ".join(f"{p.name} ({p.device}, hardware={p.hardware})" for p in PROFILES.values())


def resolve(profile: str | None, hardware: str) -> GpuProfile:
    """The profile asked for, or the one measured on `hardware`; a ConfigError listing the
    profiles when there is none, or when it was measured on another GPU than `hardware`."""
    if profile is None:
        found = [p for p in PROFILES.values() if p.hardware == hardware]
        if not found:
            raise ConfigError(f"cost=gpu_profile: no measured profile for hardware={hardware}; "
                              f"measured: {profile_names()}")
        return found[0]
    if profile not in PROFILES:
        raise ConfigError(f"cost.profile={profile!r} is not known; measured: {profile_names()}")
    prof = PROFILES[profile]
    if prof.hardware != hardware:
        raise ConfigError(f"cost.profile={profile} was measured on hardware={prof.hardware}, but "
                          f"hardware={hardware}; measured: {profile_names()}")
    return prof


def match(profile: GpuProfile, model) -> MeasuredModel:
    """The measured model whose layer shape is `model`'s (a ModelConfig); a ConfigError listing
    the measured shapes when none is."""
    want = {field: getattr(model, field) for _, field in SHAPE} | {"head_dim": model.head_dim}
    measured = measured_models(profile.name)
    for m in measured:
        if m.shape == want:
            return m
    have = "; ".join(f"{m.key} ({describe_shape(m.shape)})" for m in measured)
    raise ConfigError(f"model {model.name} ({describe_shape(want)}) has no measured layer shape in "
                      f"cost.profile={profile.name}; measured: {have}")
