"""The configs shipped in conf/: which options a group has, and the typed config of one.

The one place that reads conf/ outside Hydra's composition (which reads it too): so
`ModelConfig.bundled("gemma2b_r2")` and the trace-to-model matching (sim/trace_model.py)
see exactly the values `model=gemma2b_r2` composes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def bundled_options(group: str) -> list[str]:
    """Options of a config group shipped in conf/<group>/ (internal base_* schemas excluded)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("base_"))


def bundled_node(group: str, name: str) -> Optional[DictConfig]:
    """The values of conf/<group>/<name>.yaml (a flat YAML over its base schema, its
    `defaults` list dropped), or None when the group ships no such option."""
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        return None
    raw = OmegaConf.load(path)
    return OmegaConf.masked_copy(raw, [k for k in raw if k != "defaults"])


def load_bundled(cls: type, group: str, name: str) -> Optional[Any]:
    """The typed config (of dataclass `cls`) of conf/<group>/<name>.yaml, or None."""
    node = bundled_node(group, name)
    return None if node is None else OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), node))
