"""Arrival processes: when each request of a workload arrives. Each is a function
registered in `sim.registry.arrival_registry` (`workload.arrival=NAME`); `needs_rate`
says it reads `workload.rate` (requests/s), so a config without one is refused."""

from __future__ import annotations

import numpy as np

from sim.registry import arrival_registry


@arrival_registry.register("offline", order=0)
def offline(rng: np.random.Generator, n: int, rate: float | None) -> np.ndarray:
    """Every request waits at t=0: the offline batch job."""
    return np.zeros(n)


@arrival_registry.register("poisson", order=1, needs_rate=True)
def poisson(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """Exponential gaps of mean 1/rate: online serving."""
    return np.cumsum(rng.exponential(1.0 / rate, size=n))
