"""Which bundled model (conf/model/) recorded a trace, and whether a model can run it.

A trace's metadata names its layout (`sim.layout.Layout.to_metadata`); this module
matches it against the bundled models, so a run of a recorded trace simulates the
model that recorded it, and refuses a model whose loops differ from the trace's.
"""

from __future__ import annotations

from typing import Optional

from sim.bundled import bundled_options
from sim.config import ModelConfig
from sim.errors import ConfigError
from sim.layout import Layout, models_for_trace, models_with_loops
from sim.trace import DEFAULT_TRACE, Trace
from sim.trace_io import read_trace_metadata


def bundled_models() -> dict[str, ModelConfig]:
    """Every bundled model by name."""
    return {name: ModelConfig.bundled(name) for name in bundled_options("model")}


def trace_model(trace_path: Optional[str], synthetic: bool = False) -> Optional[str]:
    """The bundled model that recorded a trace file (None: the default trace), from its
    metadata, or None when the trace names no layout (or is generated in memory). A
    ConfigError when the layout names no bundled model or several."""
    if synthetic:
        return None
    meta = read_trace_metadata(trace_path or DEFAULT_TRACE)
    layout = Layout.from_metadata(meta)
    if layout is None:
        return None
    found = models_for_trace(meta, bundled_models())
    if len(found) == 1:
        return found[0]
    what = f"{trace_path or DEFAULT_TRACE} was recorded by a {layout.describe()} model (LoRA rank {layout.lora_rank})"
    if not found:
        raise ConfigError(f"{what}, which no bundled model has; choose one with model=NAME (and model.* keys)")
    raise ConfigError(f"{what}, which bundled models {', '.join(found)} all have; choose one with model=NAME")


def check_loops(trace: Trace, model: ModelConfig) -> None:
    """A trace's loops must be the model's: its exits are loop numbers of that model.
    A vanilla model (one loop) is the exception: it uses only the trace's request lengths."""
    if trace.num_loops == model.loops or model.loops == 1:
        return
    models = bundled_models()
    named = models_for_trace(trace.metadata, models)
    if named:
        hint = f"the trace was recorded by model={named[0]}"
    else:
        same = models_with_loops(trace.num_loops, models)
        hint = (f"bundled models with {trace.num_loops} loops: {', '.join(same)} (model=NAME)" if same
                else f"no bundled model has {trace.num_loops} loops")
    raise ConfigError(f"the trace has num_loops={trace.num_loops} but model.loops={model.loops} "
                      f"({model.name}); {hint}")
