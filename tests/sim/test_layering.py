"""The layers of the project: the simulator stands on its own (every sim/ module imports,
and a run simulates, with matplotlib and the analysis package unimportable: they serve
plots, not simulation), and no module of sim/, analysis/ or traces/ takes part in an
import cycle."""

from __future__ import annotations

import ast
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


# --- no import cycles --------------------------------------------------------------
# Every import counts, at module level and inside functions (an import moved into a
# function to dodge a cycle at load time is still a cycle of responsibilities).
PACKAGES = ("sim", "analysis", "traces")


def project_modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted name -> file of every module of `packages` under `root` (a package is its __init__)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `module` imports anywhere in its file: `import a.b`, `from a.b
    import c` (the module a.b.c when c is one, else a.b) and relative imports."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            names += [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    found = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)
    return found


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    modules = project_modules(root, packages)
    return {m: _imported(m, p, modules) for m, p in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a -> b -> ... -> a) of the graph, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycles():
    graph = import_graph(REPO, PACKAGES)
    assert {"sim.config", "sim.registry", "sim.cost.base", "analysis.figures", "traces.serving.clock"} <= set(graph)
    assert "sim.config" in graph["sim.registry"] and "sim.registry" in graph["sim.cost.roofline"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_cycles_hidden_in_functions(tmp_path):
    """A package whose cycle closes only through an import inside a function, and one
    through a relative import: both are found; without them the package is acyclic."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .leaf import X\n")
    (pkg / "sub" / "leaf.py").write_text("X = 1\n")
    (pkg / "a.py").write_text("from pkg.b import f\nimport os\n")
    (pkg / "b.py").write_text("from pkg import sub\n\ndef f():\n    from pkg.a import g\n    return g\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.sub"] == {"pkg.sub.leaf"} and graph["pkg.b"] == {"pkg.sub", "pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]
    (pkg / "b.py").write_text("from pkg import sub\n\ndef f():\n    return 1\n")
    assert find_cycle(import_graph(tmp_path, ("pkg",))) is None
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from .. import a\n")
    (pkg / "a.py").write_text("from .sub import X\n")
    assert find_cycle(import_graph(tmp_path, ("pkg",))) == ["pkg.a", "pkg.sub", "pkg.sub.leaf", "pkg.a"]
