"""The batching schedulers, by config name."""

from sim.schedulers.base import Scheduler
from sim.schedulers.continuous import ContinuousScheduler
from sim.schedulers.depthwise import DepthwiseScheduler
from sim.schedulers.speculative import SpeculativeScheduler
from sim.schedulers.static import StaticScheduler
from sim.schedulers.sync_exit import SyncExitScheduler

SCHEDULERS: dict[str, type[Scheduler]] = {
    cls.name: cls for cls in (StaticScheduler, ContinuousScheduler, SyncExitScheduler, DepthwiseScheduler,
                              SpeculativeScheduler)
}

__all__ = ["SCHEDULERS", "Scheduler"]
