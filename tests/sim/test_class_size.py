"""No god objects in sim/: a class that sets many attributes holds several jobs (issue 29)."""

import ast
from pathlib import Path

SIM = Path(__file__).resolve().parents[2] / "sim"
MOST = 21  # "about 20"; the roofline cost model keeps 21 precomputed sizes


def attributes(cls: ast.ClassDef) -> set[str]:
    """`self.X` assigned anywhere in the class, and dataclass-style annotated fields."""
    names = {s.target.id for s in cls.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    for node in ast.walk(cls):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            for e in ast.walk(target):
                if isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name) and e.value.id == "self":
                    names.add(e.attr)
    return names


def test_no_class_in_sim_sets_more_than_about_20_attributes():
    sizes = {}
    for path in sorted(SIM.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                sizes[f"{path.relative_to(SIM.parent)}:{node.name}"] = len(attributes(node))
    assert sizes["sim/slots.py:SlotState"] < 20  # the split of the old 41-attribute SlotState holds
    big = {k: v for k, v in sizes.items() if v > MOST}
    assert not big, big
