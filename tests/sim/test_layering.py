"""The simulator stands on its own: every sim/ module imports, and a run simulates, with
matplotlib and the analysis package unimportable (they serve plots, not simulation)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROGRAM = r"""
import importlib, importlib.abc, pkgutil, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("matplotlib", "analysis", "torch"):
            raise ImportError(f"sim/ must not import {name}")

sys.meta_path.insert(0, Refuse())
import sim
for m in pkgutil.walk_packages(sim.__path__, "sim."):
    importlib.import_module(m.name)
from sim.api import compose, simulate
metrics = simulate(compose(["workload.num_requests=20", "progress=false"])).metrics
print("ok", metrics["num_tokens"] > 0)
"""


def test_sim_needs_neither_matplotlib_nor_analysis():
    proc = subprocess.run([sys.executable, "-c", PROGRAM], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok True"


def test_no_sim_module_names_analysis():
    for path in (REPO / "sim").rglob("*.py"):
        text = path.read_text()
        assert "from analysis" not in text and "import analysis" not in text, path
