"""Rows: what one step computes, and the rows each slot keeps in flight.

A row is one decode of one generated position of one request (input: the token
before it; output: its token), exactly as one trace row. Every step's price and
its `StepBatch` are built from its rows by `step_load`, whatever the scheduler.

Most schedulers have one row per slot (autoregressive decoding with nothing in
flight ahead of it), and `SlotState`'s per-slot arrays are that row. A scheduler
that keeps several rows of a request in flight keeps them in `InFlight`: the
lockstep `speculative` (a round's k drafted positions) and `depthwise_spec` (rows
of one request at different loops in one step). Rows of a request are always
consecutive positions starting at the slot's first unemitted one, so a row is its
slot, its index j in the slot (position = first + j) and the next loop it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sim.cost import StepLoad
from sim.step import StepBatch


def step_load(loops: np.ndarray, context: np.ndarray, heads: np.ndarray, prefill: Sequence[int], n_loops: int,
              full_context: np.ndarray | None = None, fills: int = 0, fill_context: int = 0,
              kv_proj_layers: int = 0, kv_shared: int = 0) -> StepLoad:
    """The load of a step whose rows run `loops` attending to `context` positions, `heads`
    marking those that run the exit path (coda, final norm, head: leaving, checking an exit
    or reading a draft: one exit semantics). `full_context` is what unique prelude/coda
    layers attend to (None: the model has none, nothing to count); `fills` are KV fills
    riding along (kv_policy=recompute) over `fill_context` positions."""
    hist = np.bincount(loops, minlength=n_loops + 1)
    n_heads = int(np.count_nonzero(heads))
    entering_context = exiting_context = 0
    if full_context is not None:
        entering_context = int(full_context @ (loops == 1))
        exiting_context = int(full_context @ heads)
    return StepLoad(
        tokens=loops.size + fills,
        distinct_loops=int(np.count_nonzero(hist)),
        context=int(context.sum()) + fill_context,
        entering=int(hist[1]),
        entering_context=entering_context,
        exiting=n_heads,
        exiting_context=exiting_context,
        heads=n_heads,
        kv_proj_layers=kv_proj_layers,
        prefill=prefill,
        kv_shared=kv_shared,
    )


@dataclass(slots=True)
class StepRows:
    """The rows of one step taken from `InFlight`, in slot order and, within a slot, in
    position order (what `shared_context` relies on)."""

    slots: np.ndarray  # slot of each row
    positions: np.ndarray  # generated position of each row
    loops: np.ndarray  # loop each row runs in this step
    context: np.ndarray  # positions each row attends to at that loop, itself included
    leaving: np.ndarray  # the row's token is final after this loop
    drafting: np.ndarray  # the row reads its draft after this loop and goes on

    def shared_context(self) -> int:
        """Context positions another row of the same slot at the same loop reads too: one
        query of a (slot, loop) group attends to all the group's KV, so only the group's
        deepest row reads new positions (a speculative verify pass reads its KV once)."""
        if self.slots.size < 2:
            return 0
        key = self.slots * (int(self.loops.max()) + 1) + self.loops
        last = np.empty(key.size, dtype=bool)
        np.not_equal(key[1:], key[:-1], out=last[:-1])
        last[-1] = True
        return int(self.context.sum() - self.context[last].sum())

    def load(self, prefill: Sequence[int], n_loops: int, kv_shared: int | None = None) -> StepLoad:
        """The step's load; `kv_shared` None: computed (`shared_context`)."""
        # every row attends to every earlier position at every loop (no row exits early),
        # so what unique prelude/coda layers see is the loop's own context
        return step_load(self.loops, self.context, self.leaving | self.drafting, prefill, n_loops,
                         full_context=self.context,
                         kv_shared=self.shared_context() if kv_shared is None else kv_shared)

    def batch(self, requests: np.ndarray, admitted: np.ndarray, contract_drafting: bool) -> StepBatch:
        """The step as the executor sees it. `contract_drafting` False reports a draft read as
        a leaving row (the lockstep `speculative`'s draft steps end in the exit path and emit
        nothing; the contract's `drafting` is depthwise_spec's alone)."""
        if contract_drafting:
            return StepBatch(self.slots, requests, self.positions, self.loops, self.leaving, admitted,
                             self.drafting)
        return StepBatch(self.slots, requests, self.positions, self.loops, self.leaving | self.drafting, admitted)


class InFlight:
    """Per slot, the rows in flight: row j of slot s is position first[s] + j and runs loop
    `loop[s, j]` next (0: no row). Rows are added at the back (a new position enters loop
    1) and leave from the front (the oldest is emitted) or all at once (discarded)."""

    def __init__(self, batch_size: int, depth: int):
        self.loop = np.zeros((batch_size, depth), dtype=np.int64)
        self.count = np.zeros(batch_size, dtype=np.int64)  # rows in flight per slot

    def of(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(slot, row index) of every row in flight in `slots` (sorted), slot by slot."""
        where, j = np.nonzero(self.loop[slots])
        return slots[where], j

    def start(self, slots: np.ndarray) -> None:
        """A new row at the back of each (distinct) slot, entering loop 1 in the next step."""
        self.loop[slots, self.count[slots]] = 1
        self.count[slots] += 1

    def fill(self, slots: np.ndarray, counts: np.ndarray) -> None:
        """`counts` rows per slot (none in flight before), all entering loop 1 next."""
        self.loop[slots] = np.arange(self.loop.shape[1])[None, :] < counts[:, None]
        self.count[slots] = counts

    def pop_front(self, slots: np.ndarray) -> None:
        """The oldest row of each slot leaves (its token is emitted); the others move up."""
        self.loop[slots, :-1] = self.loop[slots, 1:]
        self.loop[slots, -1] = 0
        self.count[slots] -= 1

    def clear(self, slots: np.ndarray) -> tuple[int, int]:
        """Drop every row of `slots`; return (rows, loops they ran). A row's next loop is
        one past what it ran."""
        held = self.loop[slots]
        rows = int(np.count_nonzero(held))
        ran = int(held.sum()) - rows
        self.loop[slots] = 0
        self.count[slots] = 0
        return rows, ran
