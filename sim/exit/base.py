"""What every exit policy shares: the per-token answer it gives, and how a config picks
its policy.

A policy maps every trace token to an exit loop in 1..N and says whether that exit's
prediction differs from the final loop's (its accuracy cost). Each policy is a function
in one module of `sim/exit/`, registered in `sim.registry.exit_registry` with its typed
config and its capabilities as metadata:
- `exits_early` (default True): tokens may leave before the last loop, so the trace's
  loops must be the model's and every token checks an exit after every loop; False
  (`none`): every token runs every loop.
- `decided_live` (default False): the real model decides exits as the run goes
  (`live`), which only a real backend's step clock can do.
"""

from __future__ import annotations

import numpy as np

from sim.config import ExitConfig
from sim.errors import ConfigError
from sim.registry import exit_registry
from sim.trace import Trace

Exits = tuple[np.ndarray, np.ndarray]  # per token: exit loop (int8), exit prediction wrong (bool)


def exits_early(policy: str) -> bool:
    """Whether tokens may leave before the last loop under `policy` (registry metadata)."""
    return exit_registry.get(policy, "exit").meta.get("exits_early", True)


def decided_live(policy: str) -> bool:
    """Whether the real model decides `policy`'s exits as the run goes (registry metadata)."""
    return exit_registry.get(policy, "exit").meta.get("decided_live", False)


def apply_exit_policy(trace: Trace, cfg: ExitConfig, num_loops: int) -> Exits:
    """Per trace token: (exit loop as int8, whether the exit prediction differs from the final one).
    The trace's loops must be the model's unless every token runs them all (exit=none)."""
    if exits_early(cfg.policy) and trace.num_loops != num_loops:
        raise ConfigError(f"the trace has num_loops={trace.num_loops} but model.loops={num_loops}")
    return exit_registry.get(cfg.policy, "exit").impl(trace, exit_registry.typed(cfg), num_loops)
