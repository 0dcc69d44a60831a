"""Typed run configuration.

Hydra composes YAML from `conf/`; `load_config` then merges the result into these
dataclasses (so a typo'd key or a string where a number belongs fails before any
simulation starts) and runs the cross-field checks that YAML cannot express.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sim.errors import ConfigError

SCHEDULERS = ("static", "continuous", "sync_exit", "depthwise")
EXIT_POLICIES = ("oracle", "confidence", "none")
KV_POLICIES = ("ignore", "propagate", "recompute", "share")
COST_MODELS = ("roofline", "constant", "profiled")
ARRIVALS = ("offline", "poisson")


@dataclass
class SyntheticTraceConfig:
    """Parameters of `sim.synthetic.generate`; see that module for their meaning."""

    num_requests: int = 200
    prompt_len: int = 64
    gen_len: int = 128
    length_dist: str = "lognormal"  # fixed | uniform | lognormal
    exit_probs: list[float] = field(default_factory=lambda: [0.45, 0.3, 0.25])
    correlation: float = 0.5


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
    policy: str = "oracle"
    threshold: float = 0.9  # for policy=confidence
    kv_policy: str = "ignore"
    # True: every token evaluates the LM head after every loop (how a confidence exit
    # decides). False: only tokens that leave do, as if a free classifier decided.
    head_every_loop: bool = True


@dataclass
class SchedulerConfig:
    name: str = "depthwise"
    batch_size: int = 32


@dataclass
class CostConfig:
    kind: str = "roofline"
    # constant: every loop step costs loop_step_s; prefill_s per admitted request;
    # head_s per step that evaluates any exit head.
    loop_step_s: float = 1e-3
    prefill_s: float = 0.0
    head_s: float = 0.0
    # roofline: achieved fraction of peak bandwidth / FLOP/s, and a fixed per-step
    # cost (kernel launches, scheduling) that no roofline sees.
    bandwidth_efficiency: float = 0.7
    flops_efficiency: float = 0.5
    step_overhead_s: float = 20e-6
    # profiled: a step profile measured by traces.profile_steps (None: the bundled CPU one)
    profile: Optional[str] = None


@dataclass
class HardwareConfig:
    name: str = "a100_40g"
    memory_gb: float = 40.0  # 1e9 bytes
    bandwidth_gb_s: float = 1555.0
    peak_tflops: float = 312.0  # dense bf16


@dataclass
class ModelConfig:
    """A recursive model: `prelude_layers` unique layers, then one shared block of
    `layers_per_block` layers run `loops` times, then `coda_layers` unique layers.
    A vanilla model is loops=1 with all its layers in the block."""

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


@dataclass
class MemoryConfig:
    limit: bool = True
    # Fraction of device memory the serving system may use (the rest: activations,
    # allocator slack, CUDA context), as vLLM's gpu_memory_utilization.
    utilization: float = 0.9


@dataclass
class RunConfig:
    seed: int = 0
    progress: bool = True
    trace: TraceConfig = field(default_factory=TraceConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    exit: ExitConfig = field(default_factory=ExitConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)


def _one_of(value: str, valid: tuple[str, ...], key: str) -> None:
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not known; valid: {', '.join(valid)}")


def _positive(value: float | int | None, key: str, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}={value} must be {'>= 0' if allow_zero else '> 0'}")


def validate(cfg: RunConfig) -> RunConfig:
    """Cross-field checks; the first problem found is raised as a ConfigError."""
    _one_of(cfg.scheduler.name, SCHEDULERS, "scheduler")
    _one_of(cfg.exit.policy, EXIT_POLICIES, "exit")
    _one_of(cfg.exit.kv_policy, KV_POLICIES, "exit.kv_policy")
    _one_of(cfg.cost.kind, COST_MODELS, "cost")
    _one_of(cfg.workload.arrival, ARRIVALS, "workload.arrival")
    if cfg.scheduler.batch_size < 1:
        raise ConfigError(f"scheduler.batch_size={cfg.scheduler.batch_size} must be >= 1")
    if cfg.workload.arrival == "poisson" and cfg.workload.rate is None:
        raise ConfigError("workload.arrival=poisson needs workload.rate (requests/s)")
    _positive(cfg.workload.rate, "workload.rate")
    _positive(cfg.workload.num_requests, "workload.num_requests")
    if not 0.0 <= cfg.exit.threshold <= 1.0:
        raise ConfigError(f"exit.threshold={cfg.exit.threshold} must be in [0, 1]")
    c = cfg.cost
    _positive(c.loop_step_s, "cost.loop_step_s")
    _positive(c.prefill_s, "cost.prefill_s", allow_zero=True)
    _positive(c.head_s, "cost.head_s", allow_zero=True)
    _positive(c.step_overhead_s, "cost.step_overhead_s", allow_zero=True)
    for key in ("bandwidth_efficiency", "flops_efficiency"):
        if not 0.0 < getattr(c, key) <= 1.0:
            raise ConfigError(f"cost.{key}={getattr(c, key)} must be in (0, 1]")
    h = cfg.hardware
    for key in ("memory_gb", "bandwidth_gb_s", "peak_tflops"):
        _positive(getattr(h, key), f"hardware.{key}")
    m = cfg.model
    for key in ("loops", "layers_per_block", "d_model", "n_heads", "n_kv_heads", "head_dim",
                "d_mlp", "vocab", "dtype_bytes"):
        _positive(getattr(m, key), f"model.{key}")
    for key in ("prelude_layers", "coda_layers", "lora_rank"):
        _positive(getattr(m, key), f"model.{key}", allow_zero=True)
    if m.source_layers is not None:
        looped = m.source_layers - m.prelude_layers - m.coda_layers
        if looped <= 0 or looped % m.loops:
            raise ConfigError(f"model.source_layers={m.source_layers} minus {m.prelude_layers} prelude and "
                              f"{m.coda_layers} coda layers is not divisible by model.loops={m.loops}")
        if looped // m.loops != m.layers_per_block:
            raise ConfigError(f"model.layers_per_block={m.layers_per_block} but {looped} looped layers over "
                              f"{m.loops} loops make {looped // m.loops} per block")
    if m.n_heads % m.n_kv_heads:
        raise ConfigError(f"model.n_heads={m.n_heads} is not a multiple of model.n_kv_heads={m.n_kv_heads}")
    if not 0.0 < cfg.memory.utilization <= 1.0:
        raise ConfigError(f"memory.utilization={cfg.memory.utilization} must be in (0, 1]")
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
    return cfg


def load_config(cfg: DictConfig | dict[str, Any]) -> RunConfig:
    """Merge a composed Hydra config into the typed schema and validate it."""
    raw = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    raw = OmegaConf.masked_copy(raw, [k for k in raw.keys() if k != "hydra"]) if "hydra" in raw else raw
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), raw)
        typed: RunConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        msg = str(exc).splitlines()[0]
        raise ConfigError(f"{key}: {msg}" if key else msg) from None
    return validate(typed)


GROUP_SCHEMAS = {"scheduler": SchedulerConfig, "exit": ExitConfig, "cost": CostConfig,
                 "hardware": HardwareConfig, "model": ModelConfig, "trace": TraceConfig,
                 "workload": WorkloadConfig}


def register_configs() -> None:
    """Store each group's dataclass as `base_<group>` in Hydra's ConfigStore. Every YAML of
    a group extends it (`defaults: [base_<group>]`), so each option has every key, typed:
    `exit=oracle exit.threshold=0.8` is accepted and `scheduler.batch_size=many` refused
    at composition."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name=f"base_{group}", node=schema)


register_configs()
