"""One registry per seam: the only place where the names of schedulers, cost models,
exit policies, KV policies and arrival processes live.

A variant registers itself where it is defined, with a decorator:

    @scheduler_registry.register("srf", config=SrfConfig, label="shortest first", color="#56B4E9")
    class ShortestFirstScheduler(DepthwiseScheduler): ...

That one line makes the name valid in configs, stores the variant's typed config in
Hydra's ConfigStore as `base_<name>` (its YAML in `conf/<group>/` extends it, so its
keys are its own and typed at composition), and lists it in `--help`, in error
messages, in the analysis colours and in the benchmarks. Validation, `--help`,
plots and benchmarks ask the registry; no other list of names exists.

Variants are found without a list either: a registry imports its package (`sim.schedulers`,
`sim.cost`, `sim.exit`, `sim.kv`; arrivals: the module `sim.arrival`) and every module in it on first use, so adding a variant
is one new module and one new YAML file (docs/extending.md). Modules outside `sim/` (a
plugin, a test's fixture) are imported from the `RRTSIM_PLUGINS` environment variable
(comma-separated module names).

What a variant can do is metadata of its entry (keyword arguments of `register`), read by
whoever needs to know, never a comparison with its name:
- scheduler: `figures` (it has figures of its own, not the main ones: `speculative`),
  `baseline_of` (the figures that compare with it: "sweep", "regime_map", "speculative"),
  `baseline_label` (how those figures name it), `validated` (traces.validate compares its
  real execution with the simulator);
- exit policy: `exits_early` (default True; False: every token runs every loop),
  `decided_live` (the real model decides exits as the run goes);
- KV policy: `real` (the real backend, traces/serving/, runs it too);
- arrival process: `needs_rate` (workload.rate must be given).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Generic, TypeVar

from sim.config import CostConfig, ExitConfig, SchedulerConfig
from sim.errors import ConfigError

T = TypeVar("T")
PLUGINS_ENV = "RRTSIM_PLUGINS"
SCHEMA_PREFIX = "base_"  # ConfigStore names of the typed schemas; internal, never an option


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered variant: its implementation, its typed config and how plots show it."""

    name: str
    impl: T
    config: type
    label: str
    color: str | None
    order: int
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    def __init__(self, group: str, key: str, base: type | None, discover: str):
        self.group = group  # the Hydra config group (`scheduler=NAME`), or a config key
        self.key = key  # the field of the group's config that holds the name
        self.base = base  # the config every variant's config extends (None: no config group)
        self.discover = discover  # the package (or module) whose modules register the variants
        self._entries: dict[str, Entry[T]] = {}
        self._discovered = False

    def register(self, name: str, *, config: type | None = None, label: str | None = None,
                 color: str | None = None, order: int = 100, **meta: Any) -> Callable[[T], T]:
        """Decorator: register `impl` under `name` with its typed `config` (a dataclass
        extending the registry's base; default: the base itself)."""
        cfg = config or self.base

        def decorate(impl: T) -> T:
            if name.startswith(SCHEMA_PREFIX):
                raise ValueError(f"{self.group} names may not start with {SCHEMA_PREFIX!r}: {name}")
            old = self._entries.get(name)
            if old is not None and old.impl is not impl and _qualname(old.impl) != _qualname(impl):
                raise ValueError(f"{self.group} {name!r} is registered twice: {_qualname(old.impl)} "
                                 f"and {_qualname(impl)}")
            if cfg is not None and self.base is not None and not issubclass(cfg, self.base):
                raise TypeError(f"config of {self.group} {name!r} must extend {self.base.__name__}")
            if isinstance(impl, type) and "name" not in vars(impl):
                impl.name = name  # a subclass of a registered variant gets its own name
            self._entries[name] = Entry(name, impl, cfg, label or name, color, order, meta)
            if cfg is not None and self.base is not None:
                _store_schema(self.group, name, cfg, self.key)
            return impl

        return decorate

    def _load(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.discover)
        for module in pkgutil.iter_modules(getattr(package, "__path__", [])):
            importlib.import_module(f"{package.__name__}.{module.name}")
        load_plugins()

    def names(self) -> tuple[str, ...]:
        """Registered names, in plot order (baselines first), then alphabetical."""
        self._load()
        return tuple(e.name for e in sorted(self._entries.values(), key=lambda e: (e.order, e.name)))

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def having(self, key: str, value: Any = True) -> tuple[str, ...]:
        """Registered names (in plot order) whose metadata `key` is `value`, or, when the
        metadata is a tuple, contains it."""
        def has(meta: dict[str, Any]) -> bool:
            got = meta.get(key)
            return value in got if isinstance(got, tuple) else got == value

        return tuple(e.name for e in self.entries() if has(e.meta))

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def get(self, name: str, key: str | None = None) -> Entry[T]:
        """The entry of `name`; an unknown name is a ConfigError listing the valid ones."""
        self._load()
        entry = self._entries.get(name)
        if entry is None:
            raise ConfigError(f"{key or self.group}={name!r} is not known; valid: {', '.join(self.names())}")
        return entry

    def typed(self, cfg: Any) -> Any:
        """`cfg` as an instance of its variant's config class: a config built in Python with
        the base class (`RunConfig().exit`, then `exit.policy = "confidence"`) gets the
        variant's keys and defaults; a key the variant does not have is a ConfigError."""
        name = getattr(cfg, self.key)
        cls = self.get(name).config
        values = {k: v for k, v in vars(cfg).items() if not k.startswith("_")}
        known = {f.name for f in fields(cls)}
        extra = sorted(set(values) - known)
        if extra:
            raise ConfigError(f"{self.group}.{extra[0]} is not a key of {self.group}={name} "
                              f"(its keys: {', '.join(sorted(known))})")
        return cfg if type(cfg) is cls else cls(**values)


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _store_schema(group: str, name: str, cfg: type, key: str) -> None:
    """`base_<name>` in the group: what `conf/<group>/<name>.yaml` extends. Its name key is
    left missing, so selecting the schema itself (`<group>=base_<name>`) cannot run."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import MISSING, OmegaConf

    node = OmegaConf.structured(cfg)
    node[key] = MISSING
    ConfigStore.instance().store(group=group, name=f"{SCHEMA_PREFIX}{name}", node=node)


def load_plugins() -> None:
    """Import the modules named in RRTSIM_PLUGINS (variants defined outside sim/)."""
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"{PLUGINS_ENV}: cannot import {module!r} ({exc})") from None


scheduler_registry: Registry[type] = Registry("scheduler", "name", SchedulerConfig, "sim.schedulers")
cost_registry: Registry[type] = Registry("cost", "kind", CostConfig, "sim.cost")
exit_registry: Registry[Callable] = Registry("exit", "policy", ExitConfig, "sim.exit")
# KV policies and arrival processes have no keys of their own: each is one string key of
# another group (exit.kv_policy, workload.arrival).
kv_registry: Registry[type] = Registry("exit.kv_policy", "kv_policy", None, "sim.kv")
arrival_registry: Registry[Callable] = Registry("workload.arrival", "arrival", None, "sim.arrival")

SEAMS: dict[str, Registry] = {"scheduler": scheduler_registry, "exit": exit_registry, "cost": cost_registry}
ALL: tuple[Registry, ...] = (scheduler_registry, cost_registry, exit_registry, kv_registry, arrival_registry)


def discover_all() -> None:
    """Import every variant (and so store every schema) before Hydra composes a config."""
    for registry in ALL:
        registry._load()
