"""Measurement discipline for timed runs: pin this process, pause the background job.

Why: the machine is shared (2 cores, an uptraining job pinned to one of them, other
jobs running tests). A timed run pins itself to one core with a fixed thread count
and stops the uptraining job (SIGSTOP, its pid in /tmp/uptrain.pid) for its duration,
always resuming it (SIGCONT) on the way out, also on errors and SIGTERM/SIGINT.
"""
from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

BACKGROUND_PID_FILE = Path(os.environ.get("RRTSIM_BACKGROUND_PID", "/tmp/uptrain.pid"))


def pin(threads: int, cpus: list[int] | None) -> dict:
    """Fix torch's thread count and (optionally) the CPUs this process may run on."""
    import torch

    torch.set_num_threads(threads)
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    return {"threads": threads, "cpus": ",".join(map(str, sorted(os.sched_getaffinity(0))))}


def _background_pid() -> int | None:
    try:
        pid = int(BACKGROUND_PID_FILE.read_text().split()[0])
        os.kill(pid, 0)  # alive?
        return pid
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def background_paused(enabled: bool = True):
    """SIGSTOP the background job for the block; SIGCONT it however the block ends."""
    pid = _background_pid() if enabled else None
    if pid is None:
        yield None
        return
    previous = {}

    def resume_and_raise(signum, frame):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, resume_and_raise)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
