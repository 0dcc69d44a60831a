"""Independent reference makespans (in loop steps) for the four schedulers under
cost=constant, offline arrival, unlimited memory. Written from the definitions,
with plain Python lists, sharing no code with the simulator."""

from __future__ import annotations

import heapq


def _list_schedule(durations: list[int], slots: int) -> int:
    """FIFO list scheduling: each request takes the earliest free slot."""
    free = [0] * slots
    end = 0
    for d in durations:
        t = heapq.heappop(free)
        heapq.heappush(free, t + d)
        end = max(end, t + d)
    return end


def static_steps(exits: list[list[int]], n_loops: int, batch: int) -> int:
    return sum(n_loops * max(len(r) for r in exits[i:i + batch]) for i in range(0, len(exits), batch))


def continuous_steps(exits: list[list[int]], n_loops: int, batch: int) -> int:
    return _list_schedule([n_loops * len(r) for r in exits], batch)


def depthwise_steps(exits: list[list[int]], n_loops: int, batch: int) -> int:
    return _list_schedule([sum(r) for r in exits], batch)


def sync_exit_steps(exits: list[list[int]], n_loops: int, batch: int) -> int:
    waiting = list(range(len(exits)))
    active: list[list[int]] = []  # [request, next token]
    steps = 0
    while waiting or active:
        while waiting and len(active) < batch:
            active.append([waiting.pop(0), 0])
        steps += max(exits[r][j] for r, j in active)
        for a in active:
            a[1] += 1
        active = [a for a in active if a[1] < len(exits[a[0]])]
    return steps


REFERENCE = {"static": static_steps, "continuous": continuous_steps,
             "sync_exit": sync_exit_steps, "depthwise": depthwise_steps}
