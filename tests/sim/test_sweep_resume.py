"""A sweep killed halfway, rerun with the same command, finishes only what is missing."""

import json
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
    finished = {p.parent.name: p.read_bytes() for p in sweep_dir.glob("*/metrics.json")}
    assert 1 <= len(finished) < 4, "the kill should land mid-sweep"
    # whatever is on disk is whole: a metrics.json is complete JSON (metrics.json is written
    # last and atomically), and only a finished point has one
    for name, raw in finished.items():
        metrics = json.loads(raw)
        assert metrics["num_tokens"] > 0 and (sweep_dir / name / "config.yaml").exists()

    rerun = subprocess.run([sys.executable, "-m", "sim.run", *SWEEP, f"hydra.sweep.dir={sweep_dir}"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    skipped = {line.split(":")[0] for line in rerun.stdout.splitlines() if line.endswith("already finished, skipped")}
    assert skipped == set(finished)  # exactly the finished points are skipped ...
    for name, raw in finished.items():  # ... and left as they were
        assert (sweep_dir / name / "metrics.json").read_bytes() == raw
    done = {p.parent.name for p in sweep_dir.glob("*/metrics.json")}
    assert len(done) == 4 and set(finished) < done  # the others ran now
