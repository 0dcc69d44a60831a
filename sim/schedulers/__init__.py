"""The batching schedulers. Each module of this package registers its scheduler with
`sim.registry.scheduler_registry`, which imports them all on first use: look a scheduler
up there (`scheduler_registry.get(name).impl`), never in a list here."""

from sim.schedulers.base import Scheduler

__all__ = ["Scheduler"]
