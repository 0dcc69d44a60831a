"""traces/quiet.py finds the background uptraining jobs by the pid files traces.uptrain
writes (runs/uptrain/<name>/pid) and pauses them for a timed block (issue 30, item 8).
Uses its own sleeping processes only; the pid file of a real job is never read."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

from traces import quiet


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def jobs(tmp_path, monkeypatch):
    monkeypatch.setattr(quiet, "BACKGROUND_PID_FILE", tmp_path / "no-such.pid")
    monkeypatch.chdir(tmp_path)
    sleep = "import time; time.sleep(60)"
    procs = [subprocess.Popen([sys.executable, "-c", sleep, "traces.uptrain"]),  # looks like an uptraining run
             subprocess.Popen([sys.executable, "-c", sleep])]  # an unrelated process
    for name, p in zip(("mine", "stale"), procs):
        (tmp_path / "runs" / "uptrain" / name).mkdir(parents=True)
        (tmp_path / "runs" / "uptrain" / name / "pid").write_text(f"{p.pid}\n")
    time.sleep(0.2)
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def test_only_live_uptraining_runs_are_found(jobs):
    assert quiet.background_pids() == [jobs[0].pid]


def test_the_found_job_is_stopped_for_the_block_and_resumed(jobs):
    with quiet.background_paused() as paused:
        assert paused == [jobs[0].pid]
        time.sleep(0.1)
        assert _state(jobs[0].pid) == "T" and _state(jobs[1].pid) != "T"
    time.sleep(0.1)
    assert _state(jobs[0].pid) != "T"


def test_the_fallback_pid_file_still_counts(jobs, tmp_path, monkeypatch):
    other = tmp_path / "other.pid"
    other.write_text(f"{jobs[1].pid}\n")
    monkeypatch.setattr(quiet, "BACKGROUND_PID_FILE", other)
    assert quiet.background_pids() == [jobs[1].pid, jobs[0].pid]
    with quiet.background_paused(enabled=False) as paused:
        assert paused is None
