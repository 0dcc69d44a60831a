"""The library API: compose a run the way the CLI does, then simulate it.

    from sim.api import compose, simulate
    cfg = compose(["scheduler=sync_exit", "scheduler.batch_size=64", "model=gemma2b_r2", "trace=paper_like"])
    print(simulate(cfg).metrics["throughput_tok_s"])

`compose` takes the command line's overrides and returns the typed, validated
`RunConfig` that `python -m sim.run <overrides>` runs: options are Hydra's config
groups (so `model=gemma2b_r2` brings every key of that model, never a relabelled
default), unknown or internal options fail with the valid ones listed, and when no
`model=` is given the model is the one the trace's metadata names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from omegaconf import DictConfig, OmegaConf, open_dict

from sim.config import CONF_DIR, RunConfig, bundled_options, load_config
from sim.errors import ConfigError
from sim.registry import SCHEMA_PREFIX, SEAMS, discover_all
from sim.simulation import SimulationResult, simulate

GROUPS = ("scheduler", "exit", "cost", "hardware", "model", "trace", "workload")

__all__ = ["compose", "compose_raw", "simulate", "SimulationResult", "RunConfig", "check_choices", "follow_trace_model"]


def _parse(overrides: Iterable[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def _search_dirs(parsed) -> list[Path]:
    """conf/ and the local directories a `hydra.searchpath=[file://...]` override adds."""
    dirs = [CONF_DIR]
    for o in parsed:
        if o.key_or_group == "hydra.searchpath":
            value = o.value()
            for entry in value if isinstance(value, list) else [value]:
                if isinstance(entry, str) and entry.startswith("file://"):
                    dirs.append(Path(entry[len("file://"):]))
    return dirs


def group_options(group: str, dirs: Iterable[Path] = (CONF_DIR,)) -> list[str]:
    """What `group=NAME` accepts: a seam's registered variants, else the group's YAML files
    (internal `base_*` schemas never)."""
    if group in SEAMS:
        return list(SEAMS[group].names())
    names = {p.stem for d in dirs for p in (Path(d) / group).glob("*.yaml")}
    return sorted(n for n in names if not n.startswith(SCHEMA_PREFIX)) or bundled_options(group)


def check_choices(overrides: Iterable[str]) -> None:
    """Refuse an unknown or internal option of a config group (each value of a sweep too)
    with a ConfigError listing the valid ones, before Hydra composes anything."""
    discover_all()
    try:
        parsed = _parse(overrides)
    except Exception:  # not an override at all: Hydra reports it in its own words
        return
    dirs = _search_dirs(parsed)
    for o in parsed:
        group = o.key_or_group
        if group not in GROUPS or o.is_delete():
            continue
        value = o.value()
        values = getattr(value, "list", None) if o.is_sweep_override() else [value]
        valid = group_options(group, dirs)
        for v in values or []:
            if not isinstance(v, str) or v not in valid:
                raise ConfigError(f"{group}={v!r} is not known; valid: {', '.join(valid)}")


def follow_trace_model(raw: DictConfig, overrides: Iterable[str]) -> Optional[str]:
    """When no `model=` override is given, make `raw`'s model the bundled model that the
    trace's metadata names (`model.*` overrides still apply on top) and return its name;
    None when the trace names none (then the default model stays)."""
    from sim.layout import trace_model

    parsed = _parse(overrides)
    if any(o.key_or_group == "model" for o in parsed):
        return None
    name = trace_model(OmegaConf.select(raw, "trace.path"), OmegaConf.select(raw, "trace.synthetic") is not None)
    if name is None or name == OmegaConf.select(raw, "model.name"):
        return name
    node = OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")
    node = OmegaConf.masked_copy(node, [k for k in node if k != "defaults"])
    for o in parsed:
        if o.key_or_group.startswith("model.") and not o.is_delete():
            OmegaConf.update(node, o.key_or_group[len("model."):], o.value(), force_add=True)
    with open_dict(raw):
        raw.model = node
    return name


def hydra_message(exc: BaseException) -> str:
    """Hydra's report in one line: its first line, and the next when the first only
    introduces it ("In 'paper/gemma_a100': ConfigKeyError raised while composing config:"
    says nothing of which key without "Key 'layer_s' not in 'RooflineCostConfig'")."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [type(exc).__name__]
    return f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def hydra_error(exc: BaseException) -> ConfigError:
    """A Hydra composition error as one ConfigError line: Hydra's first line(s) and, when
    it adds something, the first line of the cause ("Key 'x' not in 'SchedulerConfig'")."""
    first = hydra_message(exc).rstrip(".")
    cause = str(exc.__cause__).strip().splitlines()[0] if exc.__cause__ and str(exc.__cause__).strip() else ""
    return ConfigError(f"{first}: {cause}" if cause and cause not in first else first)


def compose_raw(overrides: Iterable[str] = ()) -> DictConfig:
    """The untyped config `python -m sim.run <overrides>` composes (hydra keys dropped),
    its model the trace's when no `model=` is given; any mistake is one ConfigError line."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException

    overrides = list(overrides)
    check_choices(overrides)
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            raw = hydra_compose("config", overrides=overrides)
    except HydraException as exc:
        raise hydra_error(exc) from None
    raw = OmegaConf.masked_copy(raw, [k for k in raw if k != "hydra"])
    follow_trace_model(raw, overrides)
    return raw


def compose(overrides: Iterable[str] = ()) -> RunConfig:
    """The typed config `python -m sim.run <overrides>` would run (Hydra's compose API on
    conf/), validated; a bad value is a ConfigError with one clear line."""
    return load_config(compose_raw(overrides))
