"""The Hydra CLI end to end, in a subprocess as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sim.trace import write_trace
from tests.sim.helpers import trace_frame

REPO = Path(__file__).resolve().parents[2]
ANALYTIC = ["cost=constant", "cost.loop_step_s=0.001", "exit=oracle", "exit.kv_policy=ignore",
            "memory.limit=false", "progress=false"]


def run_cli(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim.run", *overrides], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trace") / "t.parquet"
    write_trace(trace_frame([[1, 2, 3, 1], [2, 2], [3, 1, 1, 1, 2]]), path, 3, {"model": "test"})
    return path


@pytest.mark.parametrize("scheduler", ["static", "continuous", "sync_exit", "depthwise"])
@pytest.mark.slow
def test_each_scheduler_writes_metrics(scheduler, small_trace, tmp_path):
    proc = run_cli(f"scheduler={scheduler}", f"trace.path={small_trace}", "model=smollm2_135m_3x10", *ANALYTIC,
                   f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("scheduler", "exit_policy", "batch_size", "num_requests", "num_tokens", "makespan_s",
                "throughput_tok_s", "mean_exit_loop", "loop_steps_per_token", "slot_utilization",
                "peak_kv_bytes", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "e2e_p50_s",
                "e2e_p99_s"):
        assert key in metrics
    assert metrics["scheduler"] == scheduler and metrics["num_tokens"] == 11
    assert (tmp_path / "requests.parquet").exists() and (tmp_path / "config.yaml").exists()
    assert "throughput" in proc.stdout


@pytest.mark.slow
def test_default_main_job_runs_on_bundled_trace(tmp_path):
    proc = run_cli("scheduler=depthwise", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_tokens"] > 20_000 and metrics["throughput_tok_s"] > 0
    assert metrics["model"] == "smollm2_135m_r2_mc" and 1 < metrics["mean_exit_loop"] < 2  # real exits
    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    documented = doc[doc.index("- `metrics.json`:"):doc.index("- `requests.parquet`:")]
    assert [k for k in metrics if k not in documented] == []  # docs/metrics.md lists every key


@pytest.mark.slow  # a subprocess or many simulations: seconds
def test_bad_trace_is_one_line_error_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.parquet"
    write_trace(trace_frame([[1, 2, 7]]), bad, 3, {})
    out = tmp_path / "run"
    proc = run_cli(f"trace.path={bad}", f"hydra.run.dir={out}")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "exit_loop" in lines[0] and "row 2" in lines[0] and str(bad) in lines[0]
    assert not out.exists()


@pytest.mark.slow  # a subprocess or many simulations: seconds
def test_bad_config_value_is_one_line_error(tmp_path):
    proc = run_cli("scheduler.batch_size=0", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "batch_size" in proc.stderr


@pytest.mark.parametrize("override", ["scheduler=fastest",
                                      pytest.param("scheduler=base_depthwise", marks=pytest.mark.slow)])
def test_unknown_scheduler_lists_options(override, tmp_path):
    proc = run_cli(override, f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: scheduler='{override.split('=')[1]}' is not known; "
        "valid: static, continuous, sync_exit, depthwise, speculative, depthwise_spec"]


def test_a_key_of_another_option_is_one_line_error(tmp_path):
    proc = run_cli("cost=constant", "cost.step_overhead_s=0", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "step_overhead_s" in proc.stderr and "ConstantCostConfig" in proc.stderr


@pytest.mark.slow  # a subprocess or many simulations: seconds
def test_help_lists_the_registered_options_only():
    out = run_cli("--help").stdout
    assert "scheduler: static, continuous, sync_exit, depthwise, speculative, depthwise_spec\n" in out
    assert "cost: roofline, constant, layer_step, profiled, gpu_profile\n" in out and "exit.kv_policy: ignore, propagate, recompute, share" in out
    assert "base_" not in out


@pytest.mark.slow  # in-process: tests/sim/test_bundled_traces.py
def test_the_model_follows_the_trace(tmp_path):
    proc = run_cli("trace.path=traces/data/smollm2_r3_mc_r64.parquet", "scheduler=depthwise", "progress=false",
                   f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["model"] == "smollm2_135m_r3_mc" and metrics["loops"] == 3 and metrics["mean_exit_loop"] > 2
    assert "smollm2_135m_r3_mc, 3 loops: the model the trace's metadata names" in proc.stdout


@pytest.mark.slow  # a subprocess or many simulations: seconds
def test_a_trace_without_layout_on_a_model_of_other_loops_lists_models(small_trace, tmp_path):
    # static ignores exits, and still refuses (every scheduler does: tests/sim/test_config.py)
    proc = run_cli(f"trace.path={small_trace}", "scheduler=static", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: the trace has num_loops=3 but model.loops=2 (smollm2_135m_r2_mc); bundled models with 3 loops: "
        "gemma2b_r3, smollm2_135m_3x10, smollm2_135m_r3_mc (model=NAME)"]


@pytest.mark.slow
def test_same_seed_same_metrics_bytes(tmp_path):
    args = ["workload.num_requests=50", "workload=poisson", "workload.rate=200", "seed=3"]
    a, b, c = (tmp_path / n for n in "abc")
    assert run_cli(*args, f"hydra.run.dir={a}").returncode == 0
    assert run_cli(*args, f"hydra.run.dir={b}").returncode == 0
    assert run_cli(*args[:-1], "seed=4", f"hydra.run.dir={c}").returncode == 0
    same = (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    assert same
    ma, mc = (json.loads((d / "metrics.json").read_text()) for d in (a, c))
    assert ma["makespan_s"] != mc["makespan_s"]
