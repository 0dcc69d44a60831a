"""The layout and shape of a recursive model, in one vocabulary for sim/ and traces/.

A model made from a stack of `source_layers` layers keeps `prelude_layers` unique
layers before, then one shared block of `layers_per_block` layers run `loops` times
(with a LoRA of rank `lora_rank` per loop), then `coda_layers` unique layers after.
prelude = coda = 0 is the paper's plain CYCLE; prelude, coda > 0 is "middle-cycle".
A vanilla model is loops = 1 with every layer in the block.

`traces/` converts models with this layout and writes it into every trace's
metadata (`to_metadata`); the simulator reads it back (`from_metadata`) to run a
trace on the bundled model (conf/model/) that recorded it, and to refuse a model
whose loops differ from the trace's (sim/trace_model.py). `ModelShape` adds the widths
to the layout, defined once here and read by the simulator's `ModelConfig` (which
extends it), the real executor (`PackedModel.layout`) and the check that a step profile
was measured on the model it prices (sim/cost/profiled.py).
This module imports nothing of the project: the bundled models it is matched against
come from its callers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional

# Metadata keys that, beside the layout's own (`Layout.keys()`), tell model families apart
# in a trace's metadata; `loops` and `lora_rank` predate this module and keep their names.
DIM_KEYS = ("source_layers", "d_model", "vocab")


@dataclass(frozen=True)
class Layout:
    loops: int
    layers_per_block: int
    prelude_layers: int = 0
    coda_layers: int = 0
    lora_rank: int = 0

    @classmethod
    def split(cls, source_layers: int, loops: int, prelude_layers: int = 0, coda_layers: int = 0,
              lora_rank: int = 0) -> "Layout":
        """The layout of `source_layers` layers with these unique layers and loops; a
        ValueError when what is left for the block does not divide into the loops."""
        looped = source_layers - prelude_layers - coda_layers
        if looped <= 0 or looped % loops:
            raise ValueError(f"{source_layers} layers - {prelude_layers} prelude - {coda_layers} coda = "
                             f"{looped} not divisible by {loops} loops")
        return cls(loops, looped // loops, prelude_layers, coda_layers, lora_rank)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The metadata keys a trace carries its layout under."""
        return tuple(f.name for f in fields(cls))

    @property
    def source_layers(self) -> int:
        return self.prelude_layers + self.loops * self.layers_per_block + self.coda_layers

    @property
    def kind(self) -> str:
        """`cycle` (the paper's CYCLE) or `middle_cycle` (unique first/last layers kept)."""
        return "cycle" if self.prelude_layers == 0 and self.coda_layers == 0 else "middle_cycle"

    def describe(self) -> str:
        """`1 unique + 2x14 shared + 1 unique`."""
        parts = ([f"{self.prelude_layers} unique"] if self.prelude_layers else []) + \
            [f"{self.loops}x{self.layers_per_block} shared"] + \
            ([f"{self.coda_layers} unique"] if self.coda_layers else [])
        return " + ".join(parts)

    def to_metadata(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()} | {"layout": self.kind,
                                                               "source_layers": str(self.source_layers)}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> Optional["Layout"]:
        """The layout a trace's metadata names, or None when it names none (older traces,
        synthetic ones)."""
        if not all(k in meta for k in cls.keys()):
            return None
        try:
            return cls(**{f.name: int(meta[f.name]) for f in fields(cls)})
        except ValueError:
            return None

    @classmethod
    def of(cls, model) -> "Layout":
        """The layout of a `ModelShape` (or a `sim.config.ModelConfig`, which is one)."""
        return cls(model.loops, model.layers_per_block, model.prelude_layers, model.coda_layers, model.lora_rank)


@dataclass
class ModelShape:
    """The layout and widths of a model: what the real executor reports of the model it
    packed and a step profile is matched on. `sim.config.ModelConfig` extends it with what
    neither needs (name, source layers, dtype, tied embeddings, the MLP's form).
    Defaults: the model of the default trace (conf/model/smollm2_135m_r2_mc.yaml)."""

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

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(ModelShape))

    @classmethod
    def of(cls, model: Any) -> "ModelShape":
        """The shape of anything with the shape's attributes (a `ModelConfig`)."""
        return ModelShape(**{k: getattr(model, k) for k in cls.keys()})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelShape":
        """The shape a mapping gives (a profile's `metadata.layout`): a ValueError naming
        the keys it lacks or has beyond the shape's, or a value that is not an integer."""
        missing = [k for k in cls.keys() if k not in values]
        extra = sorted(set(values) - set(cls.keys()))
        if missing or extra:
            raise ValueError(", ".join([*(f"{k} missing" for k in missing), *(f"{k} unknown" for k in extra)]))
        bad = [k for k in cls.keys() if isinstance(values[k], bool) or not isinstance(values[k], int)]
        if bad:
            raise ValueError(", ".join(f"{k}={values[k]!r} is not an integer" for k in bad))
        return ModelShape(**{k: values[k] for k in cls.keys()})

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ModelShape.keys()}

    def differing(self, other: "ModelShape") -> list[str]:
        """The keys where the two shapes differ."""
        return [k for k in ModelShape.keys() if getattr(self, k) != getattr(other, k)]

    @property
    def layout(self) -> Layout:
        """The shape's `Layout` (prelude, block x loops, coda, LoRA rank)."""
        return Layout.of(self)


def models_for_trace(meta: Mapping[str, str], models: Mapping[str, Any]) -> list[str]:
    """Names of `models` (name -> ModelConfig: the bundled ones, sim.bundled) with the
    trace's layout and, where the trace names them, its source layers, width and
    vocabulary; empty when it names no layout."""
    layout = Layout.from_metadata(meta)
    if layout is None:
        return []
    found = []
    for name, m in models.items():
        if Layout.of(m) != layout:
            continue
        if any(k in meta and str(getattr(m, k)) != meta[k] for k in DIM_KEYS):
            continue
        found.append(name)
    return found


def models_with_loops(loops: int, models: Mapping[str, Any]) -> list[str]:
    return [name for name, m in models.items() if m.loops == loops]


