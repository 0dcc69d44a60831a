"""Continuous batching plus early exit synchronized per iteration: an iteration runs
max(exit loop) loop steps over its tokens, and tokens that exited earlier wait in
their slots for the slowest one. What ordinary early exit gets in a batch."""

from sim.schedulers.base import IterationScheduler


class SyncExitScheduler(IterationScheduler):
    name = "sync_exit"
    honours_exits = True
