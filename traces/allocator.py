"""Run training-sized torch work under tcmalloc when the machine has it.

Why: a distillation step allocates and frees logits of batch x seq x 49,152 floats
several times over (teacher, every exit, their log-softmaxes and gradients: hundreds
of MB each). glibc serves allocations that large with fresh mmaps and returns them at
free, so every step page-faults its buffers in again: on this project's 2-core Xeon
about half of a step was kernel time (`sys`). tcmalloc keeps the pages, and the same
step runs about 2x faster (`python -m benchmarks.uptrain_speed --allocators
system,tcmalloc`; traces/README.md, "Training speed"). It is a Debian package
(`apt-get install libtcmalloc-minimal4`); without it everything runs as before.

A process cannot swap its allocator once running, so `reexec_with_tcmalloc` replaces
the process by the same command with tcmalloc preloaded, before any work starts.
`RRTSIM_ALLOCATOR=system` keeps glibc (for comparisons).
"""
from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")


def find_tcmalloc() -> str | None:
    """Path of an installed tcmalloc shared library, or None."""
    for d in _LIB_DIRS:
        for name in TCMALLOC_NAMES:
            p = Path(d) / name
            if p.exists():
                return str(p)
    found = ctypes.util.find_library("tcmalloc_minimal")
    return found and str(found)


def active() -> str:
    """The allocator this process runs under: 'tcmalloc' or 'system'."""
    return "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "system"


def reexec_with_tcmalloc(module: str) -> None:
    """Replace this process by `python -m module <same args>` under tcmalloc, if it is
    installed, not already preloaded and not refused with RRTSIM_ALLOCATOR=system."""
    if os.environ.get("RRTSIM_ALLOCATOR", "auto") == "system" or active() == "tcmalloc":
        return
    lib = find_tcmalloc()
    if lib is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)
