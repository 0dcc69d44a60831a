"""From a composed config to a checked, typed `RunConfig`.

`load_config` merges what Hydra composed into the dataclasses of `sim.config`, each seam
group into its own variant's config class (chosen by its name key, from the registry);
`validate` runs the cross-field checks that YAML cannot express. Either raises one
`ConfigError` naming the first problem, before any simulation starts.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sim.config import RunConfig
from sim.errors import ConfigError
from sim.layout import Layout
from sim.registry import SEAMS, arrival_registry, kv_registry

SEAM_GROUPS = tuple(SEAMS)  # groups whose options are registered variants


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
    for group in SEAM_GROUPS:
        setattr(cfg, group, SEAMS[group].typed(getattr(cfg, group)))
        getattr(cfg, group).check()
    kv_registry.get(cfg.exit.kv_policy)
    arrival = arrival_registry.get(cfg.workload.arrival, "workload.arrival")
    if arrival.meta.get("needs_rate") and cfg.workload.rate is None:
        raise ConfigError(f"workload.arrival={arrival.name} needs workload.rate (requests/s)")
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
