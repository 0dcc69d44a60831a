"""The registries are the one list of names: configs, --help, plots and benchmarks read them,
and a fifth scheduler is one module and one YAML file (tests/fixtures/srf.py and
tests/fixtures/conf/scheduler/srf.yaml), added without editing anything else."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim.api import compose
from sim.config import CONF_DIR
from sim.errors import ConfigError
from sim.registry import SEAMS, kv_registry, scheduler_registry
from sim.simulation import simulate
from tests.sim.helpers import make_trace

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
SEARCHPATH = f"hydra.searchpath=[file://{FIXTURES / 'conf'}]"


@pytest.fixture()
def srf():
    """Register the fixture scheduler for one test, then forget it again."""
    sys.modules.pop("tests.fixtures.srf", None)
    module = importlib.import_module("tests.fixtures.srf")
    yield module.ShortestFirstScheduler
    scheduler_registry._entries.pop("srf", None)
    sys.modules.pop("tests.fixtures.srf", None)


@pytest.mark.parametrize("group", sorted(SEAMS))
def test_every_yaml_option_is_a_registered_variant_and_back(group):
    yaml_options = {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
    assert yaml_options == set(SEAMS[group].names())
    for name in yaml_options:  # each option extends its own typed schema
        assert f"base_{name}" in (CONF_DIR / group / f"{name}.yaml").read_text()


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="scheduler='fastest' is not known; valid: static, continuous, "
                                          "sync_exit, depthwise, speculative, depthwise_spec"):
        scheduler_registry.get("fastest")
    with pytest.raises(ConfigError, match="exit.kv_policy='drop' is not known; valid: ignore, propagate"):
        kv_registry.get("drop")


@pytest.mark.parametrize("override", ["scheduler=base_depthwise", "cost=base_roofline", "model=base_model",
                                      "scheduler=static,base_static"])
def test_internal_schemas_are_refused(override):
    with pytest.raises(ConfigError, match="is not known; valid: ") as info:
        compose([override])
    assert "base_" not in str(info.value).split("valid: ")[1]


def test_a_fifth_scheduler_is_one_module_and_one_yaml(srf):
    assert "srf" in scheduler_registry.names() and srf.name == "srf"
    cfg = compose(["scheduler=srf", "scheduler.batch_size=1", "cost=constant", "progress=false", SEARCHPATH])
    assert cfg.scheduler.name == "srf"
    # one slot, requests of 5, 1 and 3 tokens, every token one loop: shortest first is 1, 3, 5
    trace = make_trace([[1] * 5, [1], [1] * 3], 1)
    cfg.model.name = "smollm2_135m_vanilla"  # one loop (setting the name loads the bundled model)
    result = simulate(cfg, trace=trace)
    finish = result.requests.set_index("request_id")["finish_s"] / cfg.cost.loop_step_s
    assert finish.round(9).tolist() == [9.0, 1.0, 4.0]
    depthwise = simulate(compose(["scheduler.batch_size=1", "cost=constant", "progress=false",
                                  "model=smollm2_135m_vanilla"]), trace=trace)
    assert (depthwise.requests["finish_s"] / cfg.cost.loop_step_s).round(9).tolist() == [5.0, 6.0, 9.0]
    assert result.metrics["makespan_s"] == pytest.approx(depthwise.metrics["makespan_s"])
    from analysis.style import scheduler_color, scheduler_label, scheduler_names

    assert "srf" in scheduler_names() and scheduler_label("srf") == "shortest first (depth-wise)"
    assert scheduler_color("srf") not in {scheduler_color(s) for s in ("static", "continuous", "sync_exit",
                                                                       "depthwise")}


@pytest.mark.slow
def test_a_fifth_scheduler_runs_from_the_cli_as_a_plugin(tmp_path):
    env = {**os.environ, "RRTSIM_PLUGINS": "tests.fixtures.srf"}
    run = [sys.executable, "-m", "sim.run", SEARCHPATH]
    help_text = subprocess.run([*run, "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert "scheduler: static, continuous, sync_exit, depthwise, speculative, depthwise_spec, srf" in help_text.stdout
    proc = subprocess.run([*run, "scheduler=srf", "workload.num_requests=40", "progress=false",
                           f"hydra.run.dir={tmp_path}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["scheduler"] == "srf"


@pytest.mark.parametrize("seed", range(6))
def test_a_reordered_admission_keeps_every_invariant(srf, seed):
    """Random traces, batches, online arrivals and binding memory through the fixture's
    shortest-first admission: every token emitted once (the run's own check), requests
    admitted only after arriving, and each admission the shortest of those waiting then."""
    import numpy as np

    from tests.sim.helpers import random_exits

    rng = np.random.default_rng(seed)
    loops = int(rng.integers(1, 4))
    exits = random_exits(rng, n_req=int(rng.integers(2, 25)), max_len=10, num_loops=loops)
    cfg = compose(["scheduler=srf", f"scheduler.batch_size={int(rng.integers(1, 5))}", "cost=constant",
                   "workload=poisson", "workload.rate=400", f"seed={seed}", "progress=false", SEARCHPATH])
    cfg.model.name = {1: "smollm2_135m_vanilla", 2: "smollm2_135m_r2_mc", 3: "smollm2_135m_r3_mc"}[loops]
    result = simulate(cfg, trace=make_trace(exits, loops), log_emits=True)
    req = result.requests
    emitted = sum(len(reqs) for reqs, _, _ in result.emit_log)
    assert emitted == result.metrics["num_tokens"] == sum(map(len, exits))
    assert (req.admitted_s >= req.arrival_s).all()
    for _, row in req.iterrows():  # nobody shorter had arrived and was still waiting
        waiting = req[(req.arrival_s <= row.admitted_s) & (req.admitted_s > row.admitted_s)]
        assert (waiting.gen_len >= row.gen_len).all()
