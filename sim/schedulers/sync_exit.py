"""Continuous batching plus early exit synchronized per iteration: an iteration runs
max(exit loop) loop steps over its tokens, and tokens that exited earlier wait in
their slots for the slowest one. What ordinary early exit gets in a batch."""

from sim.registry import scheduler_registry
from sim.schedulers.base import IterationScheduler


@scheduler_registry.register("sync_exit", label="synchronized exit", color="#CC79A7", order=2,
                             baseline_of=("regime_map", "speculative"), validated=True)
class SyncExitScheduler(IterationScheduler):
    honours_exits = True
