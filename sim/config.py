"""Typed run configuration.

Hydra composes YAML from `conf/`; `sim.validate.load_config` then merges the result into
these dataclasses (so a typo'd key or a string where a number belongs fails before any
simulation starts) and runs the cross-field checks that YAML cannot express.
The scheduler, exit and cost groups hold only the keys all their variants share;
each variant's own keys live in its config class, beside its code, registered in
`sim.registry` (the one list of names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional, TypeVar

from sim.bundled import bundled_options, load_bundled
from sim.errors import ConfigError
from sim.layout import ModelShape

B = TypeVar("B", bound="_Bundled")


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
    arrival: str = "offline"  # an arrival process of sim/arrival.py
    rate: Optional[float] = None  # requests/s, for poisson arrivals
    num_requests: Optional[int] = None  # resample this many requests with replacement


@dataclass
class ExitConfig:
    """Keys every exit policy has; a policy with keys of its own extends this in its
    module (`exit=confidence`: `sim.exit.confidence.ConfidenceExitConfig`)."""

    policy: str = "oracle"
    # What exited tokens do about the KV of the loops they skipped (sim/kv/).
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
    (`sim.cost.roofline.RooflineCostConfig`, `sim.cost.constant.ConstantCostConfig`)."""

    kind: str = "roofline"

    def check(self) -> None:
        """Value checks of the variant's own keys (ConfigError); none here."""


class _Bundled:
    """A config group whose options are YAML files of conf/<group>/: `bundled(name)` is the
    typed config of one, with every value of that file (so a name never mislabels)."""

    _group: ClassVar[str]

    @classmethod
    def bundled(cls: type[B], name: str) -> B:
        cfg = load_bundled(cls, cls._group, name)
        if cfg is None:
            raise ConfigError(f"{cls._group}={name!r} is not bundled; valid: {', '.join(bundled_options(cls._group))}")
        return cfg


@dataclass
class HardwareConfig(_Bundled):
    """A device; `HardwareConfig.bundled(name)` is one of conf/hardware/."""

    _group: ClassVar[str] = "hardware"
    name: str = "a100_40g"
    memory_gb: float = 40.0  # 1e9 bytes
    bandwidth_gb_s: float = 1555.0
    peak_tflops: float = 312.0  # dense bf16


@dataclass
class ModelConfig(ModelShape, _Bundled):
    """A recursive model: `prelude_layers` unique layers, then one shared block of
    `layers_per_block` layers run `loops` times, then `coda_layers` unique layers (its
    shape, `sim.layout.ModelShape`, with the default trace's model as defaults). A
    vanilla model is loops=1 with all its layers in the block.
    `ModelConfig.bundled(name)` is one of conf/model/."""

    _group: ClassVar[str] = "model"

    name: str = "smollm2_135m_r2_mc"
    # Layers of the original model the recursive one was made from; when given, it must
    # equal prelude + loops x layers_per_block + coda (catches e.g. model.loops=3 with 28 looped layers).
    source_layers: Optional[int] = 30
    dtype_bytes: int = 2
    tied_embeddings: bool = True
    # Llama/Gemma gate and up projections (three MLP matrices); False: one up and one down
    # projection (phi-2). The parameter counts, hence memory and every cost, follow it.
    gated_mlp: bool = True


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
    # The three seams hold their variant's config class once validated (`sim.validate.validate`).
    exit: ExitConfig = field(default_factory=ExitConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)


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
