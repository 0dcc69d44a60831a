"""Per-slot bookkeeping shared by every scheduler: the state of the batch.

A slot holds one request at a time. All per-slot state lives in numpy arrays so that
one engine step costs a fixed handful of vector operations whatever the batch size,
and no Python object exists per token. Schedulers only decide *which* slots compute
in the next loop step, *when* tokens are emitted and requests admitted, and in which
order waiting requests are offered a slot; the mechanics of doing so live here, once.

`SlotState` puts together the parts, each with one job: the request queue and
admission (sim/admission.py), the slot arrays (`SlotArrays`, here), KV accounting
(sim/slot_context.py), the run's counters (sim/run_stats.py) and, for schedulers that
keep several rows of a request in flight, those rows (sim/rows.py). Most schedulers
decode one row per slot, the slot arrays' `tok`/`loop`/`exit_at`; `run` steps them.
Row schedulers step their `InFlight` rows through `run_rows`. Emission (`deliver`) is
the same for both.
"""

from __future__ import annotations

import numpy as np

from sim.admission import AdmissionOrder, RequestQueue
from sim.cost import StepLoad
from sim.errors import InvariantError
from sim.kv_policy import KVPolicy
from sim.memory import KVMemory
from sim.rows import InFlight, StepRows, step_load
from sim.run_stats import RunStats
from sim.slot_context import SlotContext
from sim.step import StepBatch
from sim.workload import Workload

__all__ = ["AdmissionOrder", "SlotArrays", "SlotState"]


class SlotArrays:
    """Who sits in each slot and where its request stands."""

    def __init__(self, batch_size: int):
        b = batch_size
        self.occupied = np.zeros(b, dtype=bool)
        self._active: np.ndarray | None = np.zeros(0, dtype=np.int64)  # occupied slots, cached
        self.req = np.full(b, -1, dtype=np.int64)
        self.tok = np.zeros(b, dtype=np.int64)  # first position not emitted yet: the (oldest) row in flight
        self.loop = np.zeros(b, dtype=np.int64)  # next loop its row runs; > exit_at once it has exited
        self.exit_at = np.zeros(b, dtype=np.int64)
        self.gen = np.zeros(b, dtype=np.int64)  # tokens the request generates
        self.prompt = np.zeros(b, dtype=np.int64)  # its prompt length
        self.base = np.zeros(b, dtype=np.int64)  # offset of the slot's request in the token arrays

    def active(self) -> np.ndarray:
        """Indices of occupied slots (cached until admission or a finish changes them)."""
        if self._active is None:
            self._active = np.flatnonzero(self.occupied)
        return self._active

    def place(self, s: int, r: int, base: int, gen: int, prompt: int, exit_at: int) -> None:
        self.occupied[s] = True
        self._active = None
        self.req[s] = r
        self.tok[s] = 0
        self.loop[s] = 1
        self.base[s] = base
        self.exit_at[s] = exit_at
        self.gen[s] = gen
        self.prompt[s] = prompt

    def vacate(self, slots: np.ndarray) -> None:
        self.occupied[slots] = False
        self._active = None
        self.req[slots] = -1
        self.loop[slots] = 0
        self.exit_at[slots] = 0


class SlotState:
    def __init__(self, wl: Workload, batch_size: int, memory: KVMemory, kv_policy: str | KVPolicy,
                 layers_per_block: int, checks_every_loop: bool, edge_layers: bool = False,
                 rows_per_slot: int = 0):
        self.wl = wl
        self.n_loops = wl.num_loops
        self.batch_size = batch_size
        self.memory = memory
        self.checks_every_loop = checks_every_loop
        self.edge_layers = edge_layers  # the model has prelude/coda layers: their context is needed
        self.exits = wl.exit_loop.astype(np.int64)
        self.offsets = wl.offsets
        self.queue = RequestQueue(wl, memory)
        self.slots = SlotArrays(batch_size)
        self.kv = SlotContext(kv_policy, batch_size, self.n_loops, layers_per_block)
        self.stats = RunStats(wl.num_requests)
        # several rows per slot (a row scheduler); None: the slot arrays' one row
        self.rows = InFlight(batch_size, rows_per_slot) if rows_per_slot else None

    # -- admission ------------------------------------------------------------------
    def active(self) -> np.ndarray:
        return self.slots.active()

    def next_arrival(self) -> float | None:
        return self.queue.next_arrival()

    def admit(self, now: float) -> int:
        """Fill free slots with arrived requests while their KV fits, in arrival order
        (FIFO, no overtaking) or in the scheduler's order (`queue.order`)."""
        sl = self.slots
        if not self.queue.ready(now) or sl.active().size == self.batch_size:
            return 0
        placed = self.queue.take(now, np.flatnonzero(~sl.occupied))
        wl, at = self.wl, self.stats.admitted_at
        for s, r in placed:
            base = int(self.offsets[r])
            prompt = int(wl.prompt_len[r])
            sl.place(s, r, base, int(wl.gen_len[r]), prompt, int(self.exits[base]))
            self.kv.place(s, prompt)
            at[r] = now
        if placed:
            self.stats.peak_active = max(self.stats.peak_active, sl.active().size)
        return len(placed)

    # -- one step -------------------------------------------------------------------
    def run(self, idx: np.ndarray, want_batch: bool = False) -> tuple[StepLoad, np.ndarray, StepBatch | None]:
        """Advance the given slots' rows by one loop; return the step's load, the slots whose
        token just ran its exit loop, and (if `want_batch`) who computed, for a real backend."""
        sl, kv, stats = self.slots, self.kv, self.stats
        loops = sl.loop[idx]
        exit_at = sl.exit_at[idx]
        leaving = loops == exit_at  # a token run past its exit shows up in check_complete
        ctx = kv.ctx[idx, loops]
        fills, fill_context = kv.pay_fills(idx, loops, ctx)
        stats.fill_token_loops += fills
        kv_proj = 0
        if kv.policy.acts_on_early_exit:
            # exited before the last loop while later tokens will want its deeper KV
            early = leaving & (exit_at < self.n_loops) & (sl.tok[idx] + 1 < sl.gen[idx])
            if early.any():
                kv_proj = kv.exited_early(idx[early], exit_at[early])
        # an exit check is what leaving is: coda layers, final norm, head (one exit semantics),
        # so with checks every loop every computing token runs the coda
        heads = np.ones(idx.size, dtype=bool) if self.checks_every_loop else leaving
        prefill, admitted = self.queue.prefilled()
        load = step_load(loops, ctx, heads, prefill, self.n_loops,
                         full_context=kv.ctx[idx, 0] if self.edge_layers else None,
                         fills=fills, fill_context=fill_context, kv_proj_layers=kv_proj)
        batch = None
        if want_batch:
            batch = StepBatch(slots=idx, requests=sl.req[idx], positions=sl.tok[idx], loops=loops,
                              leaving=leaving, admitted=np.asarray(admitted, dtype=np.int64))
        sl.loop[idx] = loops + 1
        stats.steps += 1
        stats.token_loops += idx.size
        return load, idx[leaving], batch

    def run_rows(self, rows: StepRows, want_batch: bool = False, contract_drafting: bool = True,
                 kv_shared: int | None = None, busy: int | None = None) -> tuple[StepLoad, StepBatch | None]:
        """A row scheduler's step: price `rows` (chosen from `self.rows`, already advanced by
        the caller) and, if asked, list them for a real backend. `token_loops` counts busy
        slots (a slot computes when any of its rows does), for slot utilization.
        `kv_shared` and `busy` are computed from the rows unless the caller knows them."""
        prefill, admitted = self.queue.prefilled()
        load = rows.load(prefill, self.n_loops, kv_shared)
        batch = None
        if want_batch:
            batch = rows.batch(self.slots.req[rows.slots], np.asarray(admitted, dtype=np.int64), contract_drafting)
        if busy is None:
            s = rows.slots
            busy = int(np.count_nonzero(s[1:] != s[:-1])) + 1 if s.size else 0
        self.stats.steps += 1
        self.stats.token_loops += busy
        return load, batch

    def settle_exits(self, idx: np.ndarray, loops: np.ndarray, leave: np.ndarray) -> np.ndarray:
        """exit=live: the tokens of the step just run (slots `idx` at `loops`) that the model
        let leave take this loop as their exit; return the slots whose token exited."""
        sl = self.slots
        early = leave & (loops < sl.exit_at[idx])
        if early.any():
            s = idx[early]
            sl.exit_at[s] = loops[early]
            at = sl.base[s] + sl.tok[s]
            self.exits[at] = loops[early]  # the run's exits, for its metrics and token accounting
            self.wl.exit_loop[at] = loops[early]
        return idx[loops == sl.exit_at[idx]]

    # -- emission -------------------------------------------------------------------
    def deliver(self, idx: np.ndarray, now: float, count: np.ndarray | None = None) -> np.ndarray:
        """Hand `count` tokens (one if None) to each slot's request, in position order, and
        finish the requests that are complete: their slots, rows and KV are freed. Returns
        which of `idx` finished."""
        sl = self.slots
        req, start = sl.req[idx], sl.tok[idx]
        tok = start + 1 if count is None else start + count
        self.stats.emitted_tokens(req, start, count, now)
        sl.tok[idx] = tok
        done = tok >= sl.gen[idx]
        if done.any():
            fin_req, fin = req[done], idx[done]
            self.stats.finished_requests(fin_req, now)
            self.queue.release(fin_req)
            sl.vacate(fin)
            self.kv.vacate(fin)
            if self.rows is not None:
                self.rows.clear(fin)
        return done

    def emit(self, idx: np.ndarray, now: float) -> None:
        """Hand the given slots' tokens to their requests; start each request's next
        token at loop 1, or finish the request and free its slot and KV."""
        if idx.size == 0:
            return
        exit_at = self.slots.exit_at[idx]
        done = self.deliver(idx, now)
        if done.any():
            keep = ~done
            idx, exit_at = idx[keep], exit_at[keep]
        if idx.size:
            sl = self.slots
            self.kv.emitted(idx, exit_at)
            sl.loop[idx] = 1
            sl.exit_at[idx] = self.exits[sl.base[idx] + sl.tok[idx]]

    # -- end of run -----------------------------------------------------------------
    def check_tokens(self) -> None:
        """Token conservation: every request finished, every token emitted exactly once (its
        count; a test's emission log checks which), and the KV given back."""
        wl, stats = self.wl, self.stats
        if stats.finished != wl.num_requests or stats.emitted != wl.num_tokens:
            raise InvariantError(f"finished {stats.finished}/{wl.num_requests} requests and emitted "
                                 f"{stats.emitted}/{wl.num_tokens} tokens")
        if self.memory.in_use != 0:
            raise InvariantError(f"{self.memory.in_use} B of KV still reserved after the run")

    def check_complete(self) -> None:
        """`check_tokens`, and exactly the exit loops run (a token scheduled past its exit,
        or emitted before reaching it, breaks this count). Checked once, at the end, to keep
        steps cheap."""
        self.check_tokens()
        if self.stats.token_loops != int(self.exits.sum()):
            raise InvariantError(f"ran {self.stats.token_loops} token-loops but the exits add up to "
                                 f"{int(self.exits.sum())}: a token ran past its exit or emitted before it")
