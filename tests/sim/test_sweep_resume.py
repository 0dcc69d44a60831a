"""A sweep killed halfway, rerun with the same command, finishes only what is missing."""

import os
import signal
import subprocess
import sys
import time

from tests.sim.test_cli import REPO

import pytest

pytestmark = pytest.mark.slow  # end to end: subprocesses, a kernel or a sweep

SWEEP = ["-m", "scheduler=static,continuous,sync_exit,depthwise", "workload.num_requests=1500",
         "progress=false", "hydra/launcher=basic"]


def start(sweep_dir):
    return subprocess.Popen([sys.executable, "-m", "sim.run", *SWEEP, f"hydra.sweep.dir={sweep_dir}"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_killed_sweep_resumes(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = start(sweep_dir)
    deadline = time.time() + 120
    while not list(sweep_dir.glob("*/metrics.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name for p in sweep_dir.glob("*/metrics.json")}
    assert 1 <= len(finished) < 4, "the kill should land mid-sweep"
    # a killed point leaves no half-written result behind
    for job in sweep_dir.iterdir():
        if job.is_dir() and job.name not in finished:
            assert not (job / "metrics.json").exists()

    rerun = subprocess.run([sys.executable, "-m", "sim.run", *SWEEP, f"hydra.sweep.dir={sweep_dir}"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    for name in finished:
        assert f"{name}: already finished, skipped" in rerun.stdout
    assert len(list(sweep_dir.glob("*/metrics.json"))) == 4
