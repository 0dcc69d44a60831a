"""traces.allocator: a command re-executes itself under tcmalloc when it is installed,
keeps its arguments, and RRTSIM_ALLOCATOR=system keeps glibc. No torch needed."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from traces.allocator import active, find_tcmalloc

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import sys
from traces.allocator import active, reexec_with_tcmalloc
reexec_with_tcmalloc("probe_alloc")
print(active(), *sys.argv[1:])
"""


def _run_probe(tmp_path, **env):
    (tmp_path / "probe_alloc.py").write_text(PROBE)
    e = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "RRTSIM_ALLOCATOR")}
    e.update(env, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    out = subprocess.run([sys.executable, "-m", "probe_alloc", "a=1", "b=two"], env=e, cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_active_reads_ld_preload(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
    assert active() == "tcmalloc"
    monkeypatch.delenv("LD_PRELOAD")
    assert active() == "system"


@pytest.mark.skipif(find_tcmalloc() is None, reason="tcmalloc not installed (libtcmalloc-minimal4)")
def test_command_reexecs_under_tcmalloc_with_its_arguments(tmp_path):
    assert _run_probe(tmp_path) == ["tcmalloc", "a=1", "b=two"]


def test_allocator_system_keeps_glibc(tmp_path):
    assert _run_probe(tmp_path, RRTSIM_ALLOCATOR="system") == ["system", "a=1", "b=two"]


def test_without_tcmalloc_the_command_runs_as_it_is(tmp_path, monkeypatch):
    # a machine without the library: nothing to preload, the process goes on unchanged
    import traces.allocator as alloc
    monkeypatch.setattr(alloc, "find_tcmalloc", lambda: None)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("RRTSIM_ALLOCATOR", raising=False)
    alloc.reexec_with_tcmalloc("never_started")  # would replace the test process if it exec'd
    assert alloc.active() == "system"
