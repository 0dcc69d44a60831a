"""The analysis API: one call loads a trace or a sweep; the helpers behind the figures."""

import numpy as np
import pandas as pd
import pytest

import analysis.traces
from analysis import load_trace_frame, trace_paths
from analysis.overrides import expand, parse_point
from analysis.sweep_plots import plot_sweep, speedup
from analysis.traces import threshold_tradeoff
from sim.errors import TraceError
from sim.trace import DEFAULT_TRACE, load_trace, write_trace
from tests.sim.helpers import trace_frame


def test_trace_frame_has_one_row_per_token_with_per_loop_columns():
    tokens = load_trace_frame()
    trace = load_trace()
    assert len(tokens) == trace.num_tokens and tokens.attrs["num_loops"] == 2
    assert {"conf_1", "conf_2", "correct_1", "correct_2", "pred_2", "teacher_token", "gen_len"} <= set(tokens.columns)
    first = tokens[tokens.request_id == tokens.request_id.iloc[0]]
    assert list(first.position) == list(range(len(first))) and (first.gen_len == len(first)).all()
    np.testing.assert_array_equal(tokens.exit_loop, trace.exit_loop)


def test_trace_frame_keeps_columns_the_simulator_ignores(tmp_path):
    frame = trace_frame([[1, 2, 3], [2, 1]])
    frame["token"] = [11, 12, 13, 14, 15]
    path = tmp_path / "t.parquet"
    write_trace(frame.iloc[::-1], path, 3, {"model": "smollm2-test"})  # unsorted on disk
    tokens = load_trace_frame(path)
    assert list(tokens.token) == [11, 12, 13, 14, 15]
    assert tokens.attrs["name"] == "t"  # the file name labels figures


def test_bad_trace_fails_as_in_the_simulator(tmp_path):
    path = tmp_path / "bad.parquet"
    write_trace(trace_frame([[1, 4]]), path, 3, {})
    with pytest.raises(TraceError, match="exit_loop"):
        load_trace_frame(path)


def test_recorded_traces_are_picked_up(tmp_path, monkeypatch):
    monkeypatch.setattr(analysis.traces, "RECORDED", tmp_path)
    assert trace_paths() == [DEFAULT_TRACE]
    write_trace(trace_frame([[1, 2]]), tmp_path / "new.parquet", 2, {})
    assert trace_paths() == [DEFAULT_TRACE, tmp_path / "new.parquet"]


def test_threshold_tradeoff_is_monotone_and_bounded():
    curve = threshold_tradeoff(load_trace(), np.linspace(0, 1, 11))
    conf = curve[curve.policy == "confidence"]
    assert conf.mean_exit_loop.iloc[0] == pytest.approx(1.0)  # threshold 0: all exit after loop 1
    assert conf.mean_exit_loop.is_monotonic_increasing and conf.accuracy_cost.is_monotonic_decreasing
    assert conf.accuracy_cost.iloc[-1] == 0.0
    oracle = curve[curve.policy == "oracle"].iloc[0]
    assert oracle.accuracy_cost == 0.0 and 1 < oracle.mean_exit_loop < 3


def test_overrides_are_typed_and_expanded_like_hydra():
    assert parse_point(["scheduler=static", "scheduler.batch_size=16", "exit.threshold=0.5",
                        "trace.synthetic.exit_probs=[0.5,0.5]"]) == {
        "scheduler": "static", "scheduler.batch_size": 16, "exit.threshold": 0.5,
        "trace.synthetic.exit_probs": "[0.5,0.5]"}
    jobs, swept = expand(["scheduler=static,depthwise", "scheduler.batch_size=range(2,8,2)", "seed=1"])
    assert swept == ["scheduler", "scheduler.batch_size"] and len(jobs) == 6
    assert jobs[0] == ["scheduler=static", "scheduler.batch_size=2", "seed=1"]


def test_speedup_matches_the_baseline_point_on_the_other_keys():
    frame = pd.DataFrame({"scheduler": ["static", "depthwise", "static", "depthwise"], "batch_size": [8, 8, 16, 16],
                          "throughput_tok_s": [100.0, 250.0, 200.0, 300.0]})
    frame.attrs["swept"] = ["scheduler", "scheduler.batch_size"]
    out = speedup(frame, {"scheduler": "static"}).set_index(["scheduler", "batch_size"])["speedup"]
    assert out[("static", 8)] == 1.0 and out[("depthwise", 8)] == 2.5 and out[("depthwise", 16)] == 1.5


def test_sweep_plots_follow_the_swept_keys(tmp_path):
    """An arrival-rate sweep at one batch size: the latency plot only (no batch curves, and no
    throughput ratio, which the offered load would dominate)."""
    rows = [{"status": "ok", "scheduler": s, "workload.rate": r, "rate": r, "batch_size": 32,
             "throughput_tok_s": r * k, "e2e_p50_s": 0.1 * k, "e2e_p99_s": 0.3 * k}
            for s, k in (("continuous", 1.0), ("depthwise", 1.3)) for r in (100, 200, 400)]
    rows.append({"status": "error", "scheduler": "depthwise", "workload.rate": 800, "error": "bad"})
    frame = pd.DataFrame(rows)
    frame.attrs["swept"] = ["scheduler", "workload.rate"]
    names = sorted(p.name for p in plot_sweep(frame, tmp_path))
    assert names == ["latency_vs_throughput.png"]
