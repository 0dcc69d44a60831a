"""The cost models: how long one engine step takes. Each module of this package is one
cost model registered with `sim.registry.cost_registry`, which imports them all on first
use; look a model up there (`make_cost_model(cfg, hardware, model)`), never in a list
here. What every model shares (`StepLoad`, the `CostModel` protocol) is in `base`."""

from sim.cost.base import CostModel, StepLoad, at_least, make_cost_model

__all__ = ["CostModel", "StepLoad", "at_least", "make_cost_model"]
