"""exit=none: every token runs every loop (the full-depth reference)."""

from __future__ import annotations

import numpy as np

from sim.config import ExitConfig
from sim.exit.base import Exits
from sim.registry import exit_registry
from sim.trace import Trace


@exit_registry.register("none", order=2, exits_early=False)
def no_exit(trace: Trace, cfg: ExitConfig, num_loops: int) -> Exits:
    """Every token runs every loop."""
    n_tok = trace.num_tokens
    return np.full(n_tok, num_loops, dtype=np.int8), np.zeros(n_tok, dtype=bool)
