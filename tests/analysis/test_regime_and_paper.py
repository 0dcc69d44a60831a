"""The regime map's pricing and the paper reproduction's rows, against plain `sim.run` runs."""

import shlex
from dataclasses import replace

import pandas as pd
import pytest

from analysis.grid import compose_run
from analysis.paper import ROWS
from analysis.paper_fit import memory_budget
from analysis.regime_map import GPU_REGIMES, REGIMES, gpu_settings, price, regime_configs, settings
from sim.simulation import simulate
from tests.sim.test_cli import REPO

CSV = REPO / "figures" / "data" / "paper_reproduction.csv"


@pytest.mark.slow  # a subprocess or many simulations: seconds
def test_one_schedule_priced_by_every_regime_equals_separate_runs():
    """A SmolLM2 point at batch 8: each regime's throughput equals `sim.run` with that regime's overrides."""
    smol = next(s for s in settings() if s.name == "smollm2")
    over = [*smol.base, "scheduler=depthwise", "scheduler.batch_size=8", "trace.synthetic.num_requests=24",
            "trace.synthetic.mean_exit=1.4"]
    priced = price(compose_run(over), regime_configs(smol, over))["throughput"]
    assert list(priced) == [label for label, _ in REGIMES]
    for label, extra in (REGIMES[0], REGIMES[2]):  # fixed cost and a roofline
        direct = simulate(compose_run([*over, *extra])).metrics["throughput_tok_s"]
        assert priced[label] == pytest.approx(direct, rel=1e-9)


def test_measured_gpu_map_prices_each_regime_as_its_own_run():
    """The measured-GPU map's Llama point: every GPU regime composes (none left out), and the
    measured A100 line equals `sim.run` with its overrides (cost=gpu_profile)."""
    gpu = gpu_settings()[0]
    over = [*gpu.base, "scheduler=depthwise", "scheduler.batch_size=8", "trace.synthetic.num_requests=8",
            "trace.synthetic.mean_exit=1.4", "trace.synthetic.gen_len=64", "trace.synthetic.gen_len_min=32"]
    regimes = regime_configs(gpu, over)
    assert [label for label, _, _ in regimes] == [label for label, _ in GPU_REGIMES]
    priced = price(compose_run(over), regimes)["throughput"]
    label, extra = GPU_REGIMES[2]
    assert "cost=gpu_profile" in extra
    direct = simulate(compose_run([*over, *extra])).metrics["throughput_tok_s"]
    assert priced[label] == pytest.approx(direct, rel=1e-9)
    assert priced[label] != pytest.approx(priced[GPU_REGIMES[0][0]], rel=0.01)  # measured differs from roofline


@pytest.mark.slow  # a subprocess or many simulations: seconds
def test_gemma_regimes_compose_in_the_paper_setting():
    """Every regime composes on the paper setting's trace (a cost model refuses another's keys);
    the layer-step regime takes the paper's fitted cost per layer, the others their own keys."""
    gemma = next(s for s in settings() if s.name == "gemma")
    paper = compose_run(["+paper=gemma_a100"])
    regimes = regime_configs(gemma, gemma.base)
    # every regime, except the profiled cost: its bundled profile is of SmolLM2, not Gemma
    assert [label for label, _, _ in regimes] == [label for label, _ in REGIMES if label != "profiled"]
    for label, _, cfg in regimes:
        assert cfg.trace.synthetic == replace(paper.trace.synthetic, mean_exit=None)  # each point sets its own
        if cfg.cost.kind == "layer_step":
            assert cfg.cost.layer_s == pytest.approx(paper.cost.layer_s, rel=1e-5)
        else:
            assert not hasattr(cfg.cost, "layer_s")


@pytest.mark.slow  # a subprocess or many simulations: seconds
def test_paper_setting_with_another_cost_model_is_one_line_naming_the_key():
    """+paper sets cost.layer_s; under cost=roofline that key is refused with its name, exit code 2."""
    from tests.sim.test_cli import run_cli

    done = run_cli("+paper=gemma_a100", "cost=roofline")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "layer_s" in done.stderr and "RooflineCostConfig" in done.stderr


@pytest.mark.slow  # a subprocess or many simulations: seconds
def test_reproduction_table_has_the_issue_columns_and_fits():
    table = pd.read_csv(CSV)
    assert list(table.columns[:6]) == ["row", "paper_x", "rrtsim_tok_s", "rrtsim_x", "fitted", "overrides"]
    assert len(table) == len(ROWS) and table["fitted"].sum() == 3
    fitted = table[table["fitted"]]
    assert ((fitted["rrtsim_x"] / fitted["paper_x"] - 1).abs() < 0.05).all()
    assert (table["rrtsim_tok_s"] / table["rrtsim_tok_s"].iloc[0] - table["rrtsim_x"]).abs().max() < 1e-4
    for row, over in zip(ROWS, table["overrides"]):  # each row composes to its model and K.1 batch
        cfg = compose_run(shlex.split(over))
        assert cfg.scheduler.batch_size == row.paper_batch and cfg.cost.kind == "layer_step"


def test_paper_memory_budget_is_what_the_setting_holds():
    util, overhead, _ = memory_budget()
    mem = compose_run(["+paper=gemma_a100"]).memory
    assert mem.utilization == pytest.approx(util, rel=1e-5)
    assert mem.request_overhead_mb == pytest.approx(overhead, rel=1e-5)


@pytest.mark.slow
def test_a_rows_overrides_reproduce_its_throughput():
    """The recursive r=0 row, rerun from its CSV overrides alone (about 5 s)."""
    row = pd.read_csv(CSV).iloc[2]
    metrics = simulate(compose_run(shlex.split(row["overrides"]))).metrics
    assert metrics["throughput_tok_s"] == pytest.approx(row["rrtsim_tok_s"], rel=0.01)
