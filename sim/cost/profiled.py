"""cost=profiled: step times fitted to real measurements of the model on a device.

A profile (written by `python -m traces.profile_steps`, bundled for this CPU in
sim/profiles/) holds measured engine steps: the load the engine reports for a step
(`sim.cost.base.StepLoad`) and its median wall time, plus provenance and the model layout
it was measured on. This module fits a step-time model to those samples when it is
loaded: numpy only, no torch, so the simulator stays a base install.

The form (see `FEATURES`): t = sum_i coef_i * feature_i(load), linear in coefficients,
fitted by least squares with non-negative coefficients. Why this form and these terms
is in `FEATURES`' comments and docs/validation.md.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from sim.config import CostConfig, HardwareConfig, ModelConfig
from sim.errors import ConfigError
from sim.layout import ModelShape
from sim.registry import cost_registry

PROFILE_FORMAT = "rrtsim-step-profile/1"
BUNDLED = Path(__file__).resolve().parents[1] / "profiles" / "cpu_smollm2_r2_mc.json"
LOAD_COLUMNS = ("tokens", "distinct_loops", "context", "entering", "entering_context", "exiting",
                "exiting_context", "heads", "kv_proj_layers", "prefill_n", "prefill_tokens", "prefill_max")


def load_row(load) -> tuple[int, ...]:
    """A StepLoad as the profile's integer columns (prefill as count, total and longest prompt)."""
    pre = load.prefill
    return (load.tokens, load.distinct_loops, load.context, load.entering, load.entering_context,
            load.exiting, load.exiting_context, load.heads, load.kv_proj_layers,
            len(pre), int(sum(pre)), int(max(pre)) if len(pre) else 0)

# The step-time form. Each term is a cost the executor really pays (traces/serving/):
#   1                      per-step fixed cost: reading the shared block's weights once (~100 MB
#                          in bf16 per step at small batches) plus the Python/dispatch floor
#   tokens, hinges         the shared block's matmuls over all computing tokens. CPU GEMM time is
#                          not linear in the row count (kernel choice changes with it): hinge terms
#                          max(0, tokens - knot) let the slope change at the knots
#   distinct_loops - 1     each extra loop present brings its own LoRA weights and its own
#                          attention / LoRA calls per layer
#   context                attention reads every attended KV position of every token-loop
#   [entering > 0], entering, entering_context      the prelude layers (and embedding) for
#                          tokens entering loop 1: weights read once, then per token and position
#   [exiting > 0], exiting, exiting_context         the same for the coda layers of leaving tokens
#   [heads > 0], heads     the LM head: its 49152 x 576 matrix read once, then per row (and the
#                          softmax statistics a confidence exit reads)
#   prefill, prefill_n, prefill_padded, prefill_padded_sq     prefill of the admitted prompts as one
#                          right-padded batch: all weights read once, a little per prompt, matmuls
#                          over n x longest prompt rows, causal attention over n x longest^2 pairs
TOKEN_KNOTS = (8, 16, 32)


def features(cols: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Design matrix of the step-time form from the load columns (arrays of equal length)."""
    t = cols["tokens"].astype(float)
    feats = {
        "step": np.ones_like(t),
        "tokens": t,
        **{f"tokens_over_{k}": np.maximum(t - k, 0.0) for k in TOKEN_KNOTS},
        "extra_loops": np.maximum(cols["distinct_loops"] - 1.0, 0.0),
        "context": cols["context"].astype(float),
        "prelude": (cols["entering"] > 0).astype(float),
        "entering": cols["entering"].astype(float),
        "entering_context": cols["entering_context"].astype(float),
        "coda": (cols["exiting"] > 0).astype(float),
        "exiting": cols["exiting"].astype(float),
        "exiting_context": cols["exiting_context"].astype(float),
        "head": (cols["heads"] > 0).astype(float),
        "heads": cols["heads"].astype(float),
        "prefill": (cols["prefill_n"] > 0).astype(float),
        "prefill_n": cols["prefill_n"].astype(float),
        "prefill_padded": cols["prefill_n"] * cols["prefill_max"].astype(float),
        "prefill_padded_sq": cols["prefill_n"] * cols["prefill_max"].astype(float) ** 2,
    }
    return np.column_stack(list(feats.values())), list(feats)


def feature_names() -> list[str]:
    return features({c: np.zeros(1) for c in LOAD_COLUMNS})[1]


def fit(cols: dict[str, np.ndarray], seconds: np.ndarray) -> np.ndarray:
    """Least squares on relative error (each sample weighted by 1/its time, so short decode
    steps count as much as long prefill steps). Every term but the hinges is a cost that
    cannot be negative: a term fitted below zero (noise, or collinearity with another) is
    dropped and the rest refitted, until all are >= 0. Terms without data (all-zero
    columns, e.g. no prelude) are dropped too."""
    X, names = features(cols)
    w = 1.0 / seconds
    free = np.array([n.startswith("tokens_over_") for n in names])
    used = np.abs(X).sum(axis=0) > 0
    coef = np.zeros(X.shape[1])
    while True:
        idx = np.flatnonzero(used)
        sol, *_ = np.linalg.lstsq(X[:, idx] * w[:, None], seconds * w, rcond=None)
        coef[:] = 0.0
        coef[idx] = sol
        negative = (coef < 0) & ~free & used
        if not negative.any():
            return coef
        used[np.argmin(np.where(negative, coef * np.abs(X).mean(axis=0), np.inf))] = False


def holdout_mask(n: int) -> np.ndarray:
    """Every fifth sample is held out of the fit to measure its error (deterministic)."""
    return np.arange(n) % 5 == 4


def fit_report(cols: dict[str, np.ndarray], seconds: np.ndarray) -> dict[str, float]:
    """Fit on four fifths, report relative errors on the held-out fifth."""
    hold = holdout_mask(seconds.size)
    coef = fit({k: v[~hold] for k, v in cols.items()}, seconds[~hold])
    X, _ = features({k: v[hold] for k, v in cols.items()})
    rel = X @ coef / seconds[hold] - 1.0
    return {"holdout_points": int(hold.sum()), "holdout_mean_abs_error": float(np.mean(np.abs(rel))),
            "holdout_median_abs_error": float(np.median(np.abs(rel))),
            "holdout_p90_abs_error": float(np.percentile(np.abs(rel), 90)),
            "holdout_max_abs_error": float(np.max(np.abs(rel))),
            "holdout_bias": float(np.sum(X @ coef) / np.sum(seconds[hold]) - 1.0)}


def read_profile(path: str | Path) -> dict[str, Any]:
    """Load and check a profile file; any problem is a ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"cost.profile={p}: no such file")
    try:
        prof = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cost.profile={p}: not a JSON profile ({str(exc).splitlines()[0]})") from None
    if not isinstance(prof, dict) or prof.get("format") != PROFILE_FORMAT:
        raise ConfigError(f"cost.profile={p}: not a step profile (format must be {PROFILE_FORMAT!r})")
    cols, samples = prof.get("columns"), prof.get("samples")
    want = list(LOAD_COLUMNS) + ["seconds"]
    if cols != want:
        raise ConfigError(f"cost.profile={p}: columns must be {', '.join(want)}")
    try:
        data = np.asarray(samples, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"cost.profile={p}: samples must be rows of {len(want)} numbers") from None
    least = 2 * len(feature_names())
    if data.ndim != 2 or data.shape[1] != len(want) or data.shape[0] < least:
        raise ConfigError(f"cost.profile={p}: needs at least {least} samples of {len(want)} numbers")
    if not np.all(np.isfinite(data)) or np.any(data < 0) or np.any(data[:, -1] <= 0):
        raise ConfigError(f"cost.profile={p}: samples must be finite, loads >= 0 and seconds > 0")
    layout = (prof.get("metadata") or {}).get("layout")
    try:
        prof["shape"] = ModelShape.from_dict(layout if isinstance(layout, dict) else {})
    except ValueError as exc:
        raise ConfigError(f"cost.profile={p}: metadata.layout must give exactly the model shape "
                          f"{', '.join(ModelShape.keys())} as integers ({exc})") from None
    prof["data"] = data
    return prof


def check_layout(prof: dict[str, Any], m: ModelConfig, path: str | Path) -> None:
    """A profile prices only the model shape it was measured on."""
    measured, model = prof["shape"], ModelShape.of(m)
    bad = [f"{k}={getattr(measured, k)} (model.{k}={getattr(model, k)})" for k in measured.differing(model)]
    if bad:
        raise ConfigError(f"cost.profile={path} was measured on another model layout: {', '.join(bad)}")


@dataclass
class ProfiledCostConfig(CostConfig):
    """cost=profiled: `profile`, a profile file (traces.profile_steps); None = the bundled one."""

    kind: str = "profiled"
    profile: Optional[str] = None


@cost_registry.register("profiled", config=ProfiledCostConfig, order=3)
class ProfiledCost:
    """Step time fitted to a measured profile of this model on one device."""

    def __init__(self, cfg: ProfiledCostConfig, hw: HardwareConfig | None, m: ModelConfig):
        path = cfg.profile or BUNDLED
        prof = read_profile(path)
        check_layout(prof, m, path)
        data = prof["data"]
        cols = {c: data[:, i] for i, c in enumerate(LOAD_COLUMNS)}
        self.coef = fit(cols, data[:, -1])
        self.names = feature_names()
        self.metadata = prof["metadata"]
        self.path = str(path)

    def predict(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        """Step times of many loads at once, given as the profile's columns."""
        return np.maximum(features(cols)[0] @ self.coef, 1e-6)

    def step_time(self, load) -> float:
        row = load_row(load)
        x, _ = features({c: np.asarray([v], dtype=float) for c, v in zip(LOAD_COLUMNS, row)})
        return max(float(x[0] @ self.coef), 1e-6)
