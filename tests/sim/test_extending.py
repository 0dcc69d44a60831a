"""Adding a cost model, an exit policy or a KV policy is one module (and, for the first
two, one YAML file), added without editing anything else: the fixtures in tests/fixtures/
are exactly the examples of docs/extending.md (the scheduler's is tests/fixtures/srf.py,
tested in test_registry.py)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim.api import compose
from sim.config import ModelConfig
from sim.registry import cost_registry, exit_registry, kv_registry, scheduler_registry
from sim.simulation import simulate
from tests.sim.helpers import make_trace

REPO = Path(__file__).resolve().parents[2]
SEARCHPATH = f"hydra.searchpath=[file://{REPO / 'tests' / 'fixtures' / 'conf'}]"
PLUGINS = {"tests.fixtures.per_token_cost": (cost_registry, "per_token"),
           "tests.fixtures.first_loop_exit": (exit_registry, "first_loop"),
           "tests.fixtures.free_kv": (kv_registry, "free")}


@pytest.fixture()
def plugins():
    """Register the fixture variants for one test, then forget them again."""
    for module in PLUGINS:
        sys.modules.pop(module, None)
        importlib.import_module(module)
    yield
    for module, (registry, name) in PLUGINS.items():
        registry._entries.pop(name, None)
        sys.modules.pop(module, None)


def run(overrides: list[str], trace, model: str | None = None) -> dict:
    cfg = compose([*overrides, "progress=false", SEARCHPATH])
    if model is not None:
        cfg.model = ModelConfig.bundled(model)
    return simulate(cfg, trace=trace).metrics


def test_a_cost_model_is_one_module_and_one_yaml(plugins):
    assert "per_token" in cost_registry.names()
    cfg = compose(["cost=per_token", "cost.token_s=0.0002", SEARCHPATH])
    assert type(cfg.cost).__name__ == "PerTokenCostConfig" and cfg.cost.step_s == 0.001
    # one loop; static batches of 2: requests of 5 and 3 tokens (5 steps), then 4 (4 steps)
    m = run(["cost=per_token", "cost.token_s=0.0002", "scheduler=static", "scheduler.batch_size=2"],
            make_trace([[1] * 5, [1] * 3, [1] * 4], 1), model="smollm2_135m_vanilla")
    assert m["cost"] == "per_token" and m["loop_steps"] == 9
    assert m["makespan_s"] == pytest.approx(9 * 0.001 + 12 * 0.0002)


def test_an_exit_policy_is_one_module_and_one_yaml(plugins):
    assert "first_loop" in exit_registry.names()
    trace = make_trace([[1, 2, 2], [2, 1]], 2)
    m = run(["exit=first_loop", "cost=constant"], trace)
    assert m["exit_policy"] == "first_loop" and m["mean_exit_loop"] == 1.0
    assert m["accuracy_cost"] == pytest.approx(3 / 5)  # the tokens whose oracle exit is loop 2
    assert m["loop_steps"] == 3  # every token leaves after one loop: one step per position
    oracle = run(["exit=oracle", "cost=constant"], trace)
    assert oracle["accuracy_cost"] == 0.0 and oracle["loop_steps"] > 3


def test_a_kv_policy_is_one_module(plugins):
    assert "free" in kv_registry.names()
    trace = make_trace([[1, 1, 2, 1, 1, 2, 1], [2, 1, 1, 1], [1, 2, 1, 1, 1, 1]], 2)
    by = {kv: run(["exit=oracle", f"exit.kv_policy={kv}", "cost=roofline"], trace)
          for kv in ("ignore", "free", "propagate", "recompute")}
    assert by["free"]["kv_policy"] == "free" and by["free"]["fill_token_loops"] == 0 < by["recompute"]["fill_token_loops"]
    # free attends what propagate attends, without its projections; ignore attends less
    assert by["free"]["loop_steps"] == by["propagate"]["loop_steps"] == by["ignore"]["loop_steps"]
    assert by["ignore"]["makespan_s"] < by["free"]["makespan_s"] < by["propagate"]["makespan_s"]


@pytest.mark.slow
def test_every_kind_of_variant_runs_from_the_cli_as_a_plugin(tmp_path):
    env = {**os.environ, "RRTSIM_PLUGINS": ",".join(["tests.fixtures.srf", *PLUGINS])}
    cmd = [sys.executable, "-m", "sim.run", SEARCHPATH]
    help_text = subprocess.run([*cmd, "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    for line in ("scheduler: static, continuous, sync_exit, depthwise, speculative, depthwise_spec, srf",
                 "exit: oracle, confidence, none, live, first_loop", "per_token", "exit.kv_policy: ", ", free"):
        assert line in help_text.stdout, line
    proc = subprocess.run([*cmd, "scheduler=srf", "cost=per_token", "exit=first_loop", "exit.kv_policy=free",
                           "workload.num_requests=40", "progress=false", f"hydra.run.dir={tmp_path}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert (m["scheduler"], m["cost"], m["exit_policy"], m["kv_policy"]) == ("srf", "per_token", "first_loop", "free")
    assert m["mean_exit_loop"] == 1.0


def test_the_fixtures_leave_the_registries_as_they_found_them():
    for registry, name in PLUGINS.values():
        assert name not in registry.names()
    assert "srf" not in scheduler_registry.names()
