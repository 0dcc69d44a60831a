"""Continuous sequence-wise batching (Orca / vLLM iteration-level scheduling):
finished requests leave and waiting ones join at every decode-iteration boundary.
No early exit: every iteration runs all loops."""

from sim.schedulers.base import IterationScheduler


class ContinuousScheduler(IterationScheduler):
    name = "continuous"
    honours_exits = False
