"""A real multirun through the CLI, as a user runs it: gathered table, plots, failures."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis import load_sweep
from sim.trace import write_trace
from tests.sim.helpers import trace_frame

pytestmark = pytest.mark.slow  # end to end: subprocesses, a kernel or a sweep

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """2 schedulers x 3 batch sizes, one of them invalid (batch 0): 4 good points, 2 bad."""
    tmp = tmp_path_factory.mktemp("sweep")
    trace = tmp / "t.parquet"
    write_trace(trace_frame([[1, 2, 3, 1, 1, 2], [2, 2, 1], [3, 1, 1, 1, 2], [1, 1], [2, 3, 3, 1]]), trace, 3,
                {"model": "test"})
    out = tmp / "multirun"
    proc = run("-m", "sim.run", "-m", "scheduler=static,depthwise", "scheduler.batch_size=0,2,4",
               f"trace.path={trace}", "model=smollm2_135m_3x10", "progress=false", f"hydra.sweep.dir={out}")
    return proc, out


def test_sweep_writes_one_row_per_point(sweep):
    proc, out = sweep
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_parquet(out / "sweep.parquet")
    assert len(frame) == 6
    assert set(frame.attrs["swept"]) == {"scheduler", "scheduler.batch_size"}
    ok = frame[frame.status == "ok"]
    assert sorted(ok["scheduler.batch_size"]) == [2, 2, 4, 4]
    assert (ok["batch_size"] == ok["scheduler.batch_size"]).all()
    assert (ok["throughput_tok_s"] > 0).all() and (ok["num_tokens"] == 20).all()
    assert load_sweep(out).equals(frame)


def test_sweep_draws_the_batch_plots(sweep):
    _, out = sweep
    for name in ("throughput_vs_batch", "slot_utilization", "speedup"):
        png = out / f"{name}.png"
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert not (out / "latency_vs_throughput.png").exists()  # no arrival rate was swept


def test_failed_points_are_rows_and_listed_on_the_console(sweep):
    proc, out = sweep
    frame = pd.read_parquet(out / "sweep.parquet")
    bad = frame[frame.status != "ok"]
    assert list(bad["scheduler.batch_size"]) == [0, 0] and set(bad.status) == {"error"}
    assert bad["error"].str.contains("batch_size").all()
    tail = proc.stdout[proc.stdout.index("sweep gathered"):]
    assert "4/6 points finished; 2 FAILED" in tail
    listed = [line for line in tail.splitlines() if ": error: " in line]
    assert len(listed) == 2 and all("scheduler.batch_size=0," in line for line in listed)


def test_regather_by_hand_reports_a_killed_point(sweep):
    _, out = sweep
    # trace.path's slashes nest the job dir below `<num>_<overrides>`; gathering finds it.
    metrics = next(out.glob("*scheduler.batch_size=4,scheduler=depthwise*/**/metrics.json"))
    metrics.rename(metrics.with_suffix(".bak"))  # as if the job was killed before writing it
    try:
        proc = run("-m", "analysis.sweep", str(out))
        assert proc.returncode == 0, proc.stderr
        assert "3/6 points finished; 3 FAILED" in proc.stdout
        missing = [line for line in proc.stdout.splitlines() if ": missing: " in line]
        assert len(missing) == 1 and "scheduler.batch_size=4,scheduler=depthwise" in missing[0]
        frame = load_sweep(out)
        assert (frame.status == "missing").sum() == 1
    finally:
        metrics.with_suffix(".bak").rename(metrics)


def test_not_a_sweep_dir_is_one_line_error(tmp_path):
    proc = run("-m", "analysis.sweep", str(tmp_path))
    assert proc.returncode == 1 and "multirun.yaml" in proc.stderr and "Traceback" not in proc.stderr
