"""Measurement discipline for timed runs: pin this process, pause the background job.

Why: the machine is shared (2 cores, an uptraining job pinned to one of them, other
jobs running tests). A timed run pins itself to one core with a fixed thread count
and stops the uptraining jobs (SIGSTOP) for its duration, always resuming them
(SIGCONT) on the way out, also on errors and SIGTERM/SIGINT.

Which jobs: every `traces.uptrain` run writes its pid to `<out_dir>/pid`
(runs/uptrain/<name>/pid, relative to where it was started) while it trains; the
timed commands look there (relative to their own working directory) and pause each
live one whose command line is a traces.uptrain. A job started some other way can
be named by a pid file at $RRTSIM_BACKGROUND_PID (default /tmp/uptrain.pid).
"""
from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

BACKGROUND_PID_FILE = Path(os.environ.get("RRTSIM_BACKGROUND_PID", "/tmp/uptrain.pid"))
UPTRAIN_PID_FILES = "runs/uptrain/*/pid"  # traces.uptrain's, under the working directory


def pin(threads: int, cpus: list[int] | None) -> dict:
    """Fix torch's thread count and (optionally) the CPUs this process may run on."""
    import torch

    torch.set_num_threads(threads)
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    return {"threads": threads, "cpus": ",".join(map(str, sorted(os.sched_getaffinity(0))))}


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().split()[0])
        os.kill(pid, 0)  # alive?
        return pid
    except (OSError, ValueError, IndexError):
        return None


def _is_uptrain(pid: int) -> bool:
    """Whether a live pid is a traces.uptrain run (a stale pid file's number may have been reused)."""
    try:
        return b"traces.uptrain" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def background_pids(root: Path | str = ".") -> list[int]:
    """The live background jobs to pause: $RRTSIM_BACKGROUND_PID's (default /tmp/uptrain.pid)
    and every running traces.uptrain's `runs/uptrain/<name>/pid` under `root`."""
    pids = [pid] if (pid := _read_pid(BACKGROUND_PID_FILE)) is not None else []
    for f in sorted(Path(root).glob(UPTRAIN_PID_FILES)):
        pid = _read_pid(f)
        if pid is not None and pid != os.getpid() and pid not in pids and _is_uptrain(pid):
            pids.append(pid)
    return pids


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


@contextlib.contextmanager
def background_paused(enabled: bool = True):
    """SIGSTOP the background jobs for the block; SIGCONT them however the block ends.
    Yields the paused pids, or None when there were none."""
    pids = background_pids() if enabled else []
    if not pids:
        yield None
        return
    previous = {}

    def resume_and_raise(signum, frame):
        _signal_all(pids, signal.SIGCONT)
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, resume_and_raise)
    _signal_all(pids, signal.SIGSTOP)
    try:
        yield pids
    finally:
        _signal_all(pids, signal.SIGCONT)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
