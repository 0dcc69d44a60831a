"""Drafts read after an early loop and verified by the last one: what a trace says about them.

A draft of token p is loop d's prediction; it is right iff it equals the final loop's,
which is the trace's `correct_d`. Verification is exact from that column alone: while
every earlier draft of a request was accepted, the draft's prefix *is* the true
prefix, which is the prefix the trace was recorded with. Both self-speculative
schedulers (`speculative`, `depthwise_spec`) read their acceptance from here.
"""

from __future__ import annotations

import numpy as np

from sim.errors import ConfigError, TraceError
from sim.trace import Trace


def check_draft_loops(d: int, loops: int) -> None:
    """The draft runs fewer loops than the model: 1 <= d < N (known once the model is)."""
    if not 1 <= d < loops:
        raise ConfigError(f"scheduler.draft_loops={d} must be in 1..model.loops-1 (model.loops={loops}): "
                          f"the draft runs fewer loops than the model")


def draft_wrong(trace: Trace, d: int, loops: int, scheduler: str) -> np.ndarray:
    """Per trace token: loop d's draft differs from the final token (not `correct_d`)."""
    check_draft_loops(d, loops)
    if trace.correct is None:
        raise TraceError(f"{trace.path}: scheduler={scheduler} needs column correct_{d} (does loop {d}'s "
                         f"prediction equal the final token?), which the trace lacks")
    return ~trace.correct[:, d - 1]
