"""analysis.exit_frontier: points and their overrides, the CSV's columns and the figure, built
from real simulator runs standing in for the real runs (cost=constant: the "real" makespans are
the constant-cost simulator's, the quality the trace's own prediction), never invented numbers."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis.exit_frontier import (Point, check, collect, grid, main, plot, predicted_divergence, simulate,
                                    write)

BASE = ["workload.num_requests=8", "seed=2"]
THRESHOLDS = (0.5, 0.9)
KV = ("ignore", "share")


def test_points_name_the_runs_and_their_simulation():
    live = Point("live", 16, 0.8, "share")
    assert live.run_overrides(["seed=1"]) == ["seed=1", "scheduler=depthwise", "scheduler.batch_size=16",
                                              "exit=live", "exit.threshold=0.8", "exit.kv_policy=share"]
    assert live.sim_overrides([], "p.json")[-5:] == ["exit=confidence", "exit.threshold=0.8",
                                                     "exit.kv_policy=share", "cost=profiled", "cost.profile=p.json"]
    assert live.free_running and not Point("oracle", 16).free_running
    spec = Point("depthwise_spec", 16)
    assert "scheduler.accept=live" in spec.run_overrides() and "scheduler.accept=live" not in spec.sim_overrides()
    assert Point("continuous", 16).run_overrides()[-2:] == ["exit=none", "exit.kv_policy=ignore"]
    points = grid(THRESHOLDS, KV, [4, 8], references=("continuous", "oracle"))
    assert [p.policy for p in points[:2]] == ["continuous", "oracle"]
    assert len(points) == 2 * (2 + len(THRESHOLDS) * len(KV))
    assert len({p.key for p in points}) == len(points)


def _stand_in(point: Point) -> dict:
    """What a real run reports, from the constant-cost simulator (same workload and exits)."""
    ov = [o.replace("exit=live", "exit=confidence") for o in point.run_overrides(BASE)] + ["cost=constant"]
    return simulate(ov)[0]


def _quality(point: Point) -> dict:
    """The trace's prediction of the point's quality in traces.quality's keys (no torch here:
    the original model's log-likelihood is not available, so it is left out)."""
    m, cfg = simulate([o.replace("exit=live", "exit=confidence") for o in point.run_overrides(BASE)]
                      + ["cost=constant"])
    div = predicted_divergence(cfg)
    return {"token_agreement": 1 - m["accuracy_cost"], "mean_prefix_tokens": div["sim_prefix_tokens"],
            "identical_share": div["sim_identical_share"], "orig_loglik": np.nan, "ref_orig_loglik": np.nan}


@pytest.fixture(scope="module")
def table():
    points = grid(THRESHOLDS, KV, [4], references=("continuous", "oracle"))
    real = {p.key: [_stand_in(p)] for p in points}
    quality = {p.key: _quality(p) for p in points if p.free_running}
    return collect(points, real, quality, BASE, None, {"cpu": "stand-in: sim cost=constant"})


@pytest.mark.slow  # several simulations (cost=profiled fits its profile each time)
def test_collect_computes_speedups_and_the_simulators_prediction(table):
    assert len(table) == 2 + len(THRESHOLDS) * len(KV)
    for col in ("policy", "threshold", "kv_policy", "batch_size", "real_makespan_s", "real_speedup",
                "sim_makespan_s", "token_agreement", "identical_share", "orig_loglik", "overrides", "cpu",
                "real_spread", "sim_speedup", "speed_error", "sim_accuracy_cost", "real_divergence"):
        assert col in table.columns, col
    cont = table[table.policy == "continuous"].iloc[0]
    assert cont.real_speedup == 1.0 and cont.sim_speedup == 1.0
    live = table[table.policy == "live"]
    assert np.allclose(live.real_speedup, cont.real_makespan_s / live.real_makespan_s)
    assert np.allclose(live.speed_error, live.sim_makespan_s / live.real_makespan_s - 1)
    # the stand-in "real" quality is the trace's prediction, so the item-5 gaps vanish
    assert np.allclose(live.divergence_gap, 0) and np.allclose(live.identical_gap, 0)
    oracle = table[table.policy == "oracle"].iloc[0]
    assert oracle.quality_basis == "by construction" and oracle.token_agreement == 1.0
    assert not oracle.free_running
    # a lower threshold exits earlier and costs more accuracy in the simulator
    ign = live[live.kv_policy == "ignore"].set_index("threshold")
    assert ign.sim_mean_exit_loop[0.5] < ign.sim_mean_exit_loop[0.9]
    assert ign.sim_accuracy_cost[0.5] >= ign.sim_accuracy_cost[0.9]
    assert all("cost=profiled" in o and "exit=live" not in o for o in table.overrides)
    assert check(table) == []


@pytest.mark.slow  # several simulations (cost=profiled fits its profile each time)
def test_check_reports_a_row_its_overrides_do_not_reproduce(table):
    t = table.copy()
    t.loc[t.index[-1], "sim_makespan_s"] *= 1.05
    bad = check(t)
    assert len(bad) == 1 and "live" in bad[0]


@pytest.mark.slow  # several simulations (cost=profiled fits its profile each time)
def test_predicted_divergence_follows_the_traces_wrong_exits():
    full = predicted_divergence(simulate(["exit=none", *BASE, "cost=constant"])[1])
    m, cfg = simulate(["exit=none", *BASE, "cost=constant"])
    assert full["sim_identical_share"] == 1.0
    assert full["sim_prefix_tokens"] == pytest.approx(m["num_tokens"] / m["num_requests"])
    # exit=confidence at threshold 0: every token leaves after loop 1, wrong where loop 1 disagrees
    _, cfg0 = simulate(["exit=confidence", "exit.threshold=0", *BASE, "cost=constant"])
    from sim.simulation import load_run_trace
    from sim.workload import build_workload
    trace = load_run_trace(cfg0)
    wl = build_workload(trace, trace.exit_loop, ~trace.correct[:, 0], 2, cfg0.workload, cfg0.seed)
    wrong = np.split(wl.wrong, wl.offsets[1:-1])
    want = np.mean([np.flatnonzero(w)[0] if w.any() else w.size for w in wrong])
    assert predicted_divergence(cfg0)["sim_prefix_tokens"] == pytest.approx(want)
    assert predicted_divergence(cfg0)["sim_prefix_tokens"] < full["sim_prefix_tokens"]


@pytest.mark.slow  # several simulations (cost=profiled fits its profile each time)
def test_figure_and_csv_round_trip_without_torch(table, tmp_path):
    csv = write(table, tmp_path / "exit_frontier.csv")
    back = pd.read_csv(csv)
    assert list(back.columns) == list(table.columns) and len(back) == len(table)
    paths = plot(back, tmp_path / "fig")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
    code = ("import sys; sys.modules['torch'] = None; from analysis.exit_frontier import main; "
            f"sys.exit(main(['--csv', {str(csv)!r}, '--figure', {str(tmp_path / 'cli')!r}]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "cli.png").stat().st_size > 0


def test_missing_csv_is_one_line_exit_2(tmp_path, capsys):
    assert main(["--csv", str(tmp_path / "none.csv"), "--figure", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "none.csv" in err
    assert not (tmp_path / "f.png").exists()
