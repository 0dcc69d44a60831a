"""cost=profiled: the fit, the bundled profile, bad profiles, and no torch needed."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.config import ModelConfig
from sim.cost import StepLoad
from sim.cost.profiled import (BUNDLED, LOAD_COLUMNS, PROFILE_FORMAT, ProfiledCost, ProfiledCostConfig, feature_names, features, fit,
                               fit_report)
from sim.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CSV = REPO / "figures" / "data" / "sim_vs_real.csv"


def random_loads(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.integers(1, 65, n)
    ent = rng.integers(0, t + 1)
    ex = rng.integers(0, t + 1)
    pre = rng.integers(0, 3, n) * (rng.random(n) < 0.3)
    plen = rng.integers(30, 80, n)
    return {"tokens": t, "distinct_loops": rng.integers(1, 3, n), "context": t * rng.integers(40, 200, n),
            "entering": ent, "entering_context": ent * rng.integers(40, 200, n), "exiting": ex,
            "exiting_context": ex * rng.integers(40, 200, n), "heads": np.where(rng.random(n) < 0.5, t, ex),
            "kv_proj_layers": np.zeros(n, int), "prefill_n": pre, "prefill_tokens": pre * plen,
            "prefill_max": np.where(pre > 0, plen, 0)}


def true_coef() -> np.ndarray:
    c = dict.fromkeys(feature_names(), 0.0)
    c.update(step=0.02, tokens=4e-4, tokens_over_16=-1e-4, extra_loops=3e-3, context=2e-7, prelude=1e-3,
             entering=5e-5, coda=1e-3, exiting=5e-5, head=8e-3, heads=3e-4, prefill=0.03, prefill_n=0.002,
             prefill_padded=2e-3, prefill_padded_sq=1e-6)
    return np.array(list(c.values()))


def test_fit_recovers_the_costs_that_made_the_data():
    cols = random_loads(400)
    X, _ = features(cols)
    seconds = X @ true_coef()
    assert np.allclose(fit(cols, seconds), true_coef(), rtol=1e-6, atol=1e-12)
    rep = fit_report(cols, seconds)
    assert rep["holdout_points"] == 80 and rep["holdout_max_abs_error"] < 1e-9


def test_fit_keeps_costs_non_negative_under_noise():
    cols = random_loads(300, seed=1)
    X, names = features(cols)
    seconds = (X @ true_coef()) * np.random.default_rng(2).lognormal(0, 0.3, 300)
    coef = fit(cols, seconds)
    hinge = np.array([n.startswith("tokens_over_") for n in names])
    assert (coef[~hinge] >= 0).all()
    assert fit_report(cols, seconds)["holdout_median_abs_error"] < 0.4


def load(**kw) -> StepLoad:
    base = dict(tokens=16, distinct_loops=2, context=16 * 100, entering=8, entering_context=800, exiting=8,
                exiting_context=800, heads=16, kv_proj_layers=0, prefill=[])
    base.update(kw)
    return StepLoad(**base)


def test_bundled_profile_has_provenance_and_prices_real_costs():
    assert BUNDLED.stat().st_size < 1_000_000
    cost = ProfiledCost(ProfiledCostConfig(), None, ModelConfig())
    meta = cost.metadata
    for key in ("device", "threads", "dtype", "torch", "commit", "command", "layout", "fit", "roofline"):
        assert key in meta, key
    assert meta["layout"]["loops"] == 2 and meta["layout"]["lora_rank"] == 64
    t = cost.step_time(load())
    assert 0 < t < 10
    assert cost.step_time(load(prefill=[44, 44])) > t  # prefill costs
    assert cost.step_time(load(heads=0, exiting=0, exiting_context=0)) < t  # heads and coda cost


def write_profile(path: Path, **change) -> Path:
    prof = json.loads(BUNDLED.read_text())
    for k, v in change.items():
        if k == "layout":
            prof["metadata"]["layout"].update(v)
        else:
            prof[k] = v
    path.write_text(json.dumps(prof))
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "absent.json", "no such file"),
    (lambda p: (p / "x.json").write_text("{not json") and p / "x.json", "not a JSON profile"),
    (lambda p: write_profile(p / "f.json", format="other/1"), PROFILE_FORMAT),
    (lambda p: write_profile(p / "s.json", samples=[[1] * (len(LOAD_COLUMNS) + 1)] * 3), "at least"),
    (lambda p: write_profile(p / "n.json", samples=[[-1] * (len(LOAD_COLUMNS) + 1)] * 60), ">= 0"),
    (lambda p: write_profile(p / "l.json", layout={"lora_rank": 32}), "another model layout"),
    (lambda p: write_profile(p / "k.json", layout={"n_layers": 30}), "model shape loops, layers_per_block"),
    (lambda p: write_profile(p / "i.json", layout={"vocab": 49152.5}), "vocab=49152.5 is not an integer"),
])
def test_bad_profiles_are_config_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as e:
        ProfiledCost(ProfiledCostConfig(profile=str(path)), None, ModelConfig())
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def _sim_run_without_torch(*overrides: str) -> subprocess.CompletedProcess:
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['sim.run'] + sys.argv[1:]; "
            "runpy.run_module('sim.run', run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code, *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow  # a subprocess or many simulations: seconds
def test_sim_run_cost_profiled_needs_no_torch(tmp_path):
    proc = _sim_run_without_torch("cost=profiled", "workload.num_requests=20", "progress=false",
                                  f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["cost"] == "profiled" and m["makespan_s"] > 0


@pytest.mark.slow  # a subprocess or many simulations: seconds
def test_profile_of_another_layout_stops_the_cli_with_one_line(tmp_path):
    proc = _sim_run_without_torch("cost=profiled", "model=smollm2_135m_vanilla", "exit=none",
                                  f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "another model layout" in lines[0] and "loops=2" in lines[0]


def _reproduce(row) -> float:
    from sim.simulation import simulate
    from traces.execute import compose  # composition only: traces.execute imports no torch at module level
    from sim.validate import load_config
    cfg = load_config(compose(row["overrides"].split()))
    cfg.progress = False
    return simulate(cfg).metrics["makespan_s"]


@pytest.mark.skipif(not CSV.exists(), reason="no validation table yet")
def test_first_validation_row_reproduces_from_its_overrides():
    import pandas as pd
    row = pd.read_csv(CSV).iloc[0]
    assert _reproduce(row) == pytest.approx(row["sim_makespan_s"], rel=0.01)


@pytest.mark.slow
@pytest.mark.skipif(not CSV.exists(), reason="no validation table yet")
def test_every_validation_row_reproduces_from_its_overrides():
    import pandas as pd
    table = pd.read_csv(CSV)
    # the continuous baseline, oracle depth-wise exit and (issue 25) at least 6 lossless-speculation points
    assert len(table) >= 12 and {"continuous", "depthwise"} <= set(table.scheduler)
    assert (table.scheduler == "depthwise_spec").sum() >= 6
    for _, row in table.iterrows():
        assert "cost=profiled" in row["overrides"]
        assert _reproduce(row) == pytest.approx(row["sim_makespan_s"], rel=0.01), row["overrides"]
