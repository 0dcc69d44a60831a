"""The layout of a recursive model, in one vocabulary for sim/ and traces/.

A model made from a stack of `source_layers` layers keeps `prelude_layers` unique
layers before, then one shared block of `layers_per_block` layers run `loops` times
(with a LoRA of rank `lora_rank` per loop), then `coda_layers` unique layers after.
prelude = coda = 0 is the paper's plain CYCLE; prelude, coda > 0 is "middle-cycle".
A vanilla model is loops = 1 with every layer in the block.

`traces/` converts models with this layout and writes it into every trace's
metadata (`to_metadata`); the simulator reads it back (`from_metadata`) to run a
trace on the bundled model (conf/model/) that recorded it, and to refuse a model
whose loops differ from the trace's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Mapping, Optional

# Metadata keys a trace carries its layout (and the dimensions that tell model families
# apart) under; `loops` and `lora_rank` predate this module and keep their names.
LAYOUT_KEYS = ("prelude_layers", "layers_per_block", "loops", "coda_layers", "lora_rank")
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
        if not all(k in meta for k in LAYOUT_KEYS):
            return None
        try:
            return cls(**{f.name: int(meta[f.name]) for f in fields(cls)})
        except ValueError:
            return None

    @classmethod
    def of(cls, model) -> "Layout":
        """The layout of a `sim.config.ModelConfig`."""
        return cls(model.loops, model.layers_per_block, model.prelude_layers, model.coda_layers, model.lora_rank)


def _bundled_models() -> dict[str, object]:
    from sim.config import ModelConfig, bundled_options, load_bundled

    return {name: load_bundled(ModelConfig, "model", name) for name in bundled_options("model")}


def models_for_trace(meta: Mapping[str, str]) -> list[str]:
    """Bundled models (conf/model/) with the trace's layout and, where the trace names
    them, its source layers, width and vocabulary; empty when it names no layout."""
    layout = Layout.from_metadata(meta)
    if layout is None:
        return []
    found = []
    for name, m in _bundled_models().items():
        if Layout.of(m) != layout:
            continue
        if any(k in meta and str(getattr(m, k)) != meta[k] for k in DIM_KEYS):
            continue
        found.append(name)
    return found


def models_with_loops(loops: int) -> list[str]:
    return [name for name, m in _bundled_models().items() if m.loops == loops]


def trace_model(trace_path: Optional[str], synthetic: bool = False) -> Optional[str]:
    """The bundled model that recorded a trace file (None: the default trace), from its
    metadata, or None when the trace names no layout (or is generated in memory). A
    ConfigError when the layout names no bundled model or several."""
    from sim.errors import ConfigError
    from sim.trace import DEFAULT_TRACE
    from sim.trace_io import read_trace_metadata

    if synthetic:
        return None
    meta = read_trace_metadata(trace_path or DEFAULT_TRACE)
    layout = Layout.from_metadata(meta)
    if layout is None:
        return None
    found = models_for_trace(meta)
    if len(found) == 1:
        return found[0]
    what = f"{trace_path or DEFAULT_TRACE} was recorded by a {layout.describe()} model (LoRA rank {layout.lora_rank})"
    if not found:
        raise ConfigError(f"{what}, which no bundled model has; choose one with model=NAME (and model.* keys)")
    raise ConfigError(f"{what}, which bundled models {', '.join(found)} all have; choose one with model=NAME")


def check_loops(trace, model) -> None:
    """A trace's loops must be the model's: its exits are loop numbers of that model.
    A vanilla model (one loop) is the exception: it uses only the trace's request lengths."""
    from sim.errors import ConfigError

    if trace.num_loops == model.loops or model.loops == 1:
        return
    named = models_for_trace(trace.metadata)
    if named:
        hint = f"the trace was recorded by model={named[0]}"
    else:
        same = models_with_loops(trace.num_loops)
        hint = (f"bundled models with {trace.num_loops} loops: {', '.join(same)} (model=NAME)" if same
                else f"no bundled model has {trace.num_loops} loops")
    raise ConfigError(f"the trace has num_loops={trace.num_loops} but model.loops={model.loops} "
                      f"({model.name}); {hint}")
