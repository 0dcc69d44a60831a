"""Typed run configuration.

Hydra composes YAML from `conf/`; `load_config` then merges the result into these
dataclasses (so a typo'd key or a string where a number belongs fails before any
simulation starts) and runs the cross-field checks that YAML cannot express.
The scheduler, exit and cost groups hold only the keys all their variants share;
each variant's own keys live in its config class, beside its code, registered in
`sim.registry` (the one list of names).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sim.errors import ConfigError

ARRIVALS = ("offline", "poisson")
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@dataclass
class SyntheticTraceConfig:
    """Parameters of `sim.synthetic.generate`; see that module for their meaning."""

    num_requests: int = 200
    prompt_len: int = 64
    gen_len: int = 128
    length_dist: str = "lognormal"  # fixed | uniform | lognormal
    exit_probs: list[float] = field(default_factory=lambda: [0.45, 0.3, 0.25])
    correlation: float = 0.5
    # When set, replaces exit_probs by the one-parameter family with this mean exit loop
    # over len(exit_probs) loops (sim.synthetic.geometric_exit_probs).
    mean_exit: Optional[float] = None
    # When set, generated lengths are uniform on [gen_len_min, gen_len] (gen_len a cap,
    # like max_new_tokens) whatever length_dist says; prompts still follow length_dist.
    gen_len_min: Optional[int] = None


@dataclass
class TraceConfig:
    # None: the bundled default trace. Ignored when `synthetic` is set.
    path: Optional[str] = None
    # Required for CSV; for Parquet it must match the file's metadata if given.
    num_loops: Optional[int] = None
    # When set, a trace is generated in memory instead of read from `path`.
    synthetic: Optional[SyntheticTraceConfig] = None


@dataclass
class WorkloadConfig:
    arrival: str = "offline"
    rate: Optional[float] = None  # requests/s, for poisson arrivals
    num_requests: Optional[int] = None  # resample this many requests with replacement


@dataclass
class ExitConfig:
    """Keys every exit policy has; a policy with keys of its own extends this in its
    module (`exit=confidence`: `sim.exit_policy.ConfidenceExitConfig`)."""

    policy: str = "oracle"
    # What exited tokens do about the KV of the loops they skipped (sim/kv_policy.py).
    # A key of the exit group, not a group: it only matters once tokens exit.
    kv_policy: str = "ignore"
    # True: every token evaluates the LM head after every loop (how a confidence exit
    # decides). False: only tokens that leave do, as if a free classifier decided.
    head_every_loop: bool = True

    def check(self) -> None:
        """Value checks of the variant's own keys (ConfigError); none here."""


@dataclass
class SchedulerConfig:
    """Keys every scheduler has; one with keys of its own extends this in its module."""

    name: str = "depthwise"
    batch_size: int = 32

    def check(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"scheduler.batch_size={self.batch_size} must be >= 1")


@dataclass
class CostConfig:
    """The key every cost model has; each model's own keys are in its config class
    (`sim.cost.RooflineCostConfig`, `sim.cost.ConstantCostConfig`)."""

    kind: str = "roofline"

    def check(self) -> None:
        """Value checks of the variant's own keys (ConfigError); none here."""


class _ByName:
    """Setting `name` on a built config to a bundled config's name (a YAML in
    conf/<group>/) loads that config's values, so `cfg.model.name = "gemma2b_r2"`
    simulates Gemma and never SmolLM2 labelled Gemma. Other names only relabel."""

    _group: ClassVar[str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_built", True)

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "name" and getattr(self, "_built", False) and value != getattr(self, "name", None):
            bundled = load_bundled(type(self), self._group, value)
            if bundled is not None:
                for f in fields(bundled):
                    object.__setattr__(self, f.name, getattr(bundled, f.name))
                return
        object.__setattr__(self, key, value)


def bundled_options(group: str) -> list[str]:
    """Options of a config group shipped in conf/<group>/ (internal base_* schemas excluded)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("base_"))


def load_bundled(cls: type, group: str, name: str) -> Any:
    """The typed config of conf/<group>/<name>.yaml (a flat YAML over its base schema), or None."""
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        return None
    raw = OmegaConf.load(path)
    raw = OmegaConf.masked_copy(raw, [k for k in raw if k != "defaults"])
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), raw))


@dataclass
class HardwareConfig(_ByName):
    """A device; setting `name` to a bundled one (conf/hardware/) loads its values."""

    _group: ClassVar[str] = "hardware"
    name: str = "a100_40g"
    memory_gb: float = 40.0  # 1e9 bytes
    bandwidth_gb_s: float = 1555.0
    peak_tflops: float = 312.0  # dense bf16


@dataclass
class ModelConfig(_ByName):
    """A recursive model: `prelude_layers` unique layers, then one shared block of
    `layers_per_block` layers run `loops` times, then `coda_layers` unique layers.
    A vanilla model is loops=1 with all its layers in the block. Setting `name` to a
    bundled model (conf/model/) loads that model's values: a name never mislabels."""

    _group: ClassVar[str] = "model"

    # Defaults: the layout of the default trace (conf/model/smollm2_135m_r2_mc.yaml).
    name: str = "smollm2_135m_r2_mc"
    # Layers of the original model the recursive one was made from; when given, it must
    # equal prelude + loops x layers_per_block + coda (catches e.g. model.loops=3 with 28 looped layers).
    source_layers: Optional[int] = 30
    loops: int = 2
    layers_per_block: int = 14
    prelude_layers: int = 1
    coda_layers: int = 1
    d_model: int = 576
    n_heads: int = 9
    n_kv_heads: int = 3
    head_dim: int = 64
    d_mlp: int = 1536
    vocab: int = 49152
    lora_rank: int = 64
    dtype_bytes: int = 2
    tied_embeddings: bool = True
    # Llama/Gemma gate and up projections (three MLP matrices); False: one up and one down
    # projection (phi-2). The parameter counts, hence memory and every cost, follow it.
    gated_mlp: bool = True

    @property
    def layout(self):
        """The model's `sim.layout.Layout` (prelude, block x loops, coda, LoRA rank)."""
        from sim.layout import Layout

        return Layout.of(self)


@dataclass
class MemoryConfig:
    limit: bool = True
    # Fraction of device memory the serving system may use (the rest: activations,
    # allocator slack, CUDA context), as vLLM's gpu_memory_utilization.
    utilization: float = 0.9
    # Memory a request holds beyond its KV cache (MB, 1e6 bytes), reserved with it at
    # admission: what a serving stack keeps per sequence (the paper setting derives it).
    request_overhead_mb: float = 0.0


@dataclass
class RunConfig:
    seed: int = 0
    progress: bool = True
    trace: TraceConfig = field(default_factory=TraceConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    # The three seams hold their variant's config class once validated (`validate`).
    exit: ExitConfig = field(default_factory=ExitConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)


SEAM_GROUPS = ("scheduler", "exit", "cost")  # groups whose options are registered variants


def _one_of(value: str, valid: tuple[str, ...], key: str) -> None:
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not known; valid: {', '.join(valid)}")


def _positive(value: float | int | None, key: str, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}={value} must be {'>= 0' if allow_zero else '> 0'}")


def validate(cfg: RunConfig) -> RunConfig:
    """Cross-field checks; the first problem found is raised as a ConfigError. Each seam's
    config becomes its variant's class (`Registry.typed`), in place."""
    from sim.registry import SEAMS, kv_registry

    for group in SEAM_GROUPS:
        setattr(cfg, group, SEAMS[group].typed(getattr(cfg, group)))
        getattr(cfg, group).check()
    kv_registry.get(cfg.exit.kv_policy)
    _one_of(cfg.workload.arrival, ARRIVALS, "workload.arrival")
    if cfg.workload.arrival == "poisson" and cfg.workload.rate is None:
        raise ConfigError("workload.arrival=poisson needs workload.rate (requests/s)")
    _positive(cfg.workload.rate, "workload.rate")
    _positive(cfg.workload.num_requests, "workload.num_requests")
    h = cfg.hardware
    for key in ("memory_gb", "bandwidth_gb_s", "peak_tflops"):
        _positive(getattr(h, key), f"hardware.{key}")
    m = cfg.model
    for key in ("loops", "layers_per_block", "d_model", "n_heads", "n_kv_heads", "head_dim",
                "d_mlp", "vocab", "dtype_bytes"):
        _positive(getattr(m, key), f"model.{key}")
    for key in ("prelude_layers", "coda_layers", "lora_rank"):
        _positive(getattr(m, key), f"model.{key}", allow_zero=True)
    if m.source_layers is not None:  # the layout (sim/layout.py) must split the source model's layers
        from sim.layout import Layout

        try:
            split = Layout.split(m.source_layers, m.loops, m.prelude_layers, m.coda_layers, m.lora_rank)
        except ValueError:
            raise ConfigError(f"model.source_layers={m.source_layers} minus {m.prelude_layers} prelude and "
                              f"{m.coda_layers} coda layers is not divisible by model.loops={m.loops}") from None
        if split.layers_per_block != m.layers_per_block:
            raise ConfigError(f"model.layers_per_block={m.layers_per_block} but {m.loops} loops over "
                              f"{m.source_layers - m.prelude_layers - m.coda_layers} looped layers make "
                              f"{split.layers_per_block} per block")
    if m.n_heads % m.n_kv_heads:
        raise ConfigError(f"model.n_heads={m.n_heads} is not a multiple of model.n_kv_heads={m.n_kv_heads}")
    if not 0.0 < cfg.memory.utilization <= 1.0:
        raise ConfigError(f"memory.utilization={cfg.memory.utilization} must be in (0, 1]")
    _positive(cfg.memory.request_overhead_mb, "memory.request_overhead_mb", allow_zero=True)
    s = cfg.trace.synthetic
    if s is not None:
        _one_of(s.length_dist, ("fixed", "uniform", "lognormal"), "trace.synthetic.length_dist")
        _positive(s.num_requests, "trace.synthetic.num_requests")
        _positive(s.gen_len, "trace.synthetic.gen_len")
        _positive(s.prompt_len, "trace.synthetic.prompt_len", allow_zero=True)
        if not s.exit_probs or any(p < 0 for p in s.exit_probs) or abs(sum(s.exit_probs) - 1) > 1e-6:
            raise ConfigError(f"trace.synthetic.exit_probs={list(s.exit_probs)} must be >= 0 and sum to 1")
        if not 0.0 <= s.correlation <= 1.0:
            raise ConfigError(f"trace.synthetic.correlation={s.correlation} must be in [0, 1]")
        if s.mean_exit is not None and not 1.0 <= s.mean_exit <= len(s.exit_probs):
            raise ConfigError(f"trace.synthetic.mean_exit={s.mean_exit} must be in [1, {len(s.exit_probs)}] "
                              f"(the loops of exit_probs)")
        if s.gen_len_min is not None and not 1 <= s.gen_len_min <= s.gen_len:
            raise ConfigError(f"trace.synthetic.gen_len_min={s.gen_len_min} must be in [1, gen_len={s.gen_len}]")
    return cfg


def _omegaconf_error(exc: OmegaConfBaseException) -> ConfigError:
    key = getattr(exc, "full_key", None)
    msg = str(exc).splitlines()[0]
    return ConfigError(f"{key}: {msg}" if key else msg)


def load_config(cfg: DictConfig | dict[str, Any]) -> RunConfig:
    """Merge a composed Hydra config into the typed schema and validate it. Each seam
    group is merged into its own variant's config class, chosen by its name key."""
    from sim.registry import SEAMS

    raw = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    rest = OmegaConf.masked_copy(raw, [k for k in raw.keys() if k != "hydra" and k not in SEAM_GROUPS])
    try:
        typed: RunConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), rest))
        for group in SEAM_GROUPS:
            if group not in raw:
                continue
            registry = SEAMS[group]
            node = raw[group]
            name = OmegaConf.select(node, registry.key, throw_on_missing=False)
            if name is None or OmegaConf.is_missing(node, registry.key):
                raise ConfigError(f"{group}: no {group} chosen; valid: {', '.join(registry.names())}")
            cls = registry.get(name).config
            setattr(typed, group, OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), node)))
    except OmegaConfBaseException as exc:
        raise _omegaconf_error(exc) from None
    return validate(typed)


GROUP_SCHEMAS = {"hardware": HardwareConfig, "model": ModelConfig, "trace": TraceConfig,
                 "workload": WorkloadConfig}


def register_configs() -> None:
    """Store the schema of each group without variants as `base_<group>` in Hydra's
    ConfigStore; every YAML of the group extends it (`defaults: [base_<group>]`), so a
    value of the wrong type (`model.loops=many`) is refused at composition. The seams'
    schemas (`base_<variant>`) are stored by their registries (sim/registry.py)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name=f"base_{group}", node=schema)


register_configs()
