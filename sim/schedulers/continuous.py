"""Continuous sequence-wise batching (Orca / vLLM iteration-level scheduling):
finished requests leave and waiting ones join at every decode-iteration boundary.
No early exit: every iteration runs all loops."""

from sim.registry import scheduler_registry
from sim.schedulers.base import IterationScheduler


@scheduler_registry.register("continuous", label="continuous (sequence-wise)", color="#0072B2", order=1,
                             baseline_of=("sweep", "regime_map", "speculative"),
                             baseline_label="continuous batching, every loop (no exit)", validated=True)
class ContinuousScheduler(IterationScheduler):
    honours_exits = False
