"""An independent driver of depthwise_spec's semantics (issue 25) for the executor's tests.

It builds the `StepBatch`es that scheduler=depthwise_spec sends (several rows of one request
in flight at different loops, drafting rows at loop d, discards after a rejected draft) by
hand, straight from the contract in sim/step.py, so the executor's side of the contract is
tested without the simulator's scheduler. Offline arrivals; a freed slot is refilled in the
next step, as under depthwise.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np

from sim.cost import StepLoad
from sim.step import StepBatch

NO_LOAD = StepLoad(0, 0, 0, 0, 0, 0, 0, 0, 0, [])


def drive_depthwise_spec(clock, gen_len: np.ndarray, batch_size: int, loops: int, draft_loops: int,
                         accept: Callable[[int, int], bool] | None = None) -> dict:
    """Run every request to its end. `accept(request, position)` decides acceptance (any answer
    is a valid schedule when teacher-forced); None: the clock decides (scheduler.accept=live).
    Returns the counts a test checks: steps, rows, discarded rows, accepted and rejected drafts,
    and the largest number of rows of one slot in a step."""
    N, d = loops, draft_loops
    waiting = deque(range(len(gen_len)))
    resident: dict[int, int] = {}  # slot -> request
    rows: dict[int, list[list[int]]] = {}  # slot -> in-flight rows [position, loop], by position
    admitted: list[int] = []
    stats = {"steps": 0, "rows": 0, "discarded": 0, "accepted": 0, "rejected": 0, "max_rows_per_slot": 0}

    def refill():
        for s in range(batch_size):
            if s not in resident and waiting:
                r = waiting.popleft()
                resident[s], rows[s] = r, [[0, 1]]
                admitted.append(r)

    refill()
    while resident:
        sl, rq, ps, lp = [], [], [], []
        for s in sorted(resident):
            for p, k in rows[s]:
                sl.append(s), rq.append(resident[s]), ps.append(p), lp.append(k)
            stats["max_rows_per_slot"] = max(stats["max_rows_per_slot"], len(rows[s]))
        sl, rq, ps, lp = (np.asarray(a, dtype=np.int64) for a in (sl, rq, ps, lp))
        leaving = lp == N
        drafting = (lp == d) & (ps + 1 < gen_len[rq])
        batch = StepBatch(sl, rq, ps, lp, leaving, np.asarray(admitted, dtype=np.int64), drafting)
        admitted.clear()
        clock.step_seconds(NO_LOAD, batch)
        stats["steps"] += 1
        stats["rows"] += len(sl)
        for s in np.unique(sl).tolist():
            r = resident[s]
            for i in np.flatnonzero(sl == s).tolist():  # this slot's rows, by position
                p = int(ps[i])
                row = next(x for x in rows[s] if x[0] == p)
                if drafting[i]:
                    row[1] += 1
                    rows[s].append([p + 1, 1])
                elif not leaving[i]:
                    row[1] += 1
                else:
                    rows[s].remove(row)
                    if p + 1 == gen_len[r]:
                        del resident[s], rows[s]
                        break
                    ok = bool(clock.accepted[i]) if accept is None else accept(r, p)
                    stats["accepted" if ok else "rejected"] += 1
                    if not ok:  # every later in-flight row is discarded; p + 1 re-enters with the verified token
                        stats["discarded"] += len(rows[s])
                        rows[s] = [[p + 1, 1]]
                        break
        for s in rows:
            rows[s].sort()
        refill()
    return stats
