"""What a run records as it goes, for its metrics: per-request timestamps and counters.

Kept apart from the slot mechanics so that the numbers a run reports are read from
one place (sim/metrics.py) and cost nothing beyond a few increments per step.
"""

from __future__ import annotations

import numpy as np


class RunStats:
    def __init__(self, n_requests: int):
        self.admitted_at = np.full(n_requests, np.nan)
        self.first_token_at = np.full(n_requests, np.nan)
        self.finished_at = np.full(n_requests, np.nan)
        self.finished = 0
        self.emitted = 0
        # (request, position, time) of every emitted token, when a test asks for it
        self.emit_log: list[tuple[np.ndarray, np.ndarray, float]] | None = None
        self.steps = 0
        self.token_loops = 0  # busy slot-steps: useful loop work (fills excluded)
        self.fill_token_loops = 0
        self.peak_active = 0

    def emitted_tokens(self, req: np.ndarray, start: np.ndarray, count: np.ndarray | None, now: float) -> None:
        """Each request of `req` got `count` tokens (1 if None) from position `start` on."""
        if count is None:
            if self.emit_log is not None:
                self.emit_log.append((req.copy(), start.copy(), now))
            self.emitted += req.size
        else:
            if self.emit_log is not None:
                total = int(count.sum())
                within = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
                self.emit_log.append((np.repeat(req, count), np.repeat(start, count) + within, now))
            self.emitted += int(count.sum())
        self.first_token_at[req[start == 0]] = now

    def finished_requests(self, req: np.ndarray, now: float) -> None:
        self.finished_at[req] = now
        self.finished += req.size
