"""Per-slot bookkeeping shared by every scheduler: the state of the batch.

A slot holds one request at a time and, within it, the one token being decoded
(generation is autoregressive, so a request never has two tokens in flight).
All per-slot state lives in numpy arrays so that one engine step costs a fixed
handful of vector operations whatever the batch size, and no Python object
exists per token. Schedulers only decide *which* slots compute in the next loop
step, *when* tokens are emitted and requests admitted, and in which order waiting
requests are offered a slot (`order`, FIFO when None); the mechanics of doing so live
here, once. What an exited token does about KV is its KV policy's (sim/kv_policy.py).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from sim.cost import StepLoad
from sim.errors import ConfigError, InvariantError
from sim.kv import KVPolicy, kv_policy as as_kv_policy
from sim.memory import KVMemory
from sim.step import StepBatch
from sim.workload import Workload

# Admission order: given the arrived, waiting requests (indices, arrival order), the
# order in which they are offered free slots. None: FIFO, on a faster path.
AdmissionOrder = Callable[[np.ndarray], np.ndarray]


class SlotState:
    def __init__(self, wl: Workload, batch_size: int, memory: KVMemory, kv_policy: str | KVPolicy,
                 layers_per_block: int, checks_every_loop: bool, edge_layers: bool = False):
        self.wl = wl
        n = self.n_loops = wl.num_loops
        self.batch_size = batch_size
        self.memory = memory
        self.kv = as_kv_policy(kv_policy)
        self.order: AdmissionOrder | None = None  # set by a scheduler that reorders admission
        self._now = 0.0  # time of the last admission attempt
        self.layers_per_block = layers_per_block
        self.checks_every_loop = checks_every_loop
        self.edge_layers = edge_layers  # the model has prelude/coda layers: their context is needed
        self.exits = wl.exit_loop.astype(np.int64)
        self.offsets = wl.offsets
        self.need = memory.request_bytes(wl.prompt_len, wl.gen_len)  # KV reserved per request
        if memory.limited and wl.num_requests:
            worst = int(np.argmax(self.need))
            if self.need[worst] > memory.capacity:
                raise ConfigError(
                    f"request {worst} needs {self.need[worst] / 1e9:.2f} GB of KV cache "
                    f"({wl.prompt_len[worst]} prompt + {wl.gen_len[worst]} generated tokens) but only "
                    f"{memory.capacity / 1e9:.2f} GB are free after the weights: it can never run")
        b = batch_size
        self.occupied = np.zeros(b, dtype=bool)
        self._active: np.ndarray | None = np.zeros(0, dtype=np.int64)  # occupied slots, cached
        self.req = np.full(b, -1, dtype=np.int64)
        self.tok = np.zeros(b, dtype=np.int64)  # position of the token in flight
        self.loop = np.zeros(b, dtype=np.int64)  # next loop it runs; > exit_at once it has exited
        self.exit_at = np.zeros(b, dtype=np.int64)
        self.gen = np.zeros(b, dtype=np.int64)
        self.base = np.zeros(b, dtype=np.int64)  # offset of the slot's request in the token arrays
        # ctx[s, k]: positions the slot's token attends to at loop k (itself included);
        # column 0 counts every position (what unique prelude/coda layers see). Which loops
        # an emitted token adds to is the KV policy's answer (row e: an exit at loop e).
        self.ctx = np.zeros((b, n + 2), dtype=np.int64)
        self._kv_gain = self.kv.context_gain(n)
        # KV fills owed per loop by exited tokens, paid when the slot's next token runs that
        # loop (kv_policy=recompute: FREE's synchronized parallel decoding).
        self._owed_gain = self.kv.fills_owed(n)
        self.owed = np.zeros((b, n + 2), dtype=np.int64) if self._owed_gain is not None else None
        n_req = self.n_requests = wl.num_requests
        self.arrival = wl.arrival
        self.admitted_at = np.full(n_req, np.nan)
        self.first_token_at = np.full(n_req, np.nan)
        self.finished_at = np.full(n_req, np.nan)
        self.next_req = 0  # every request before it has been admitted
        self.waiting = np.ones(n_req, dtype=bool)  # not admitted yet (for a reordered admission)
        self.finished = 0
        self.emitted = 0
        self.prefill: list[int] = []
        self.prefill_req: list[int] = []  # the same admissions, as request indices
        # (request, position, time) of every emitted token, when a test asks for it
        self.emit_log: list[tuple[np.ndarray, np.ndarray, float]] | None = None
        # counters for metrics
        self.steps = 0
        self.token_loops = 0  # useful loop work (fills excluded)
        self.fill_token_loops = 0
        self.peak_active = 0

    def active(self) -> np.ndarray:
        """Indices of occupied slots (cached until admission or a finish changes them)."""
        if self._active is None:
            self._active = np.flatnonzero(self.occupied)
        return self._active

    def next_arrival(self) -> float | None:
        """When the next request arrives that has not arrived yet (None: all have)."""
        if self.order is None:
            return float(self.arrival[self.next_req]) if self.next_req < self.n_requests else None
        r = max(self.next_req, int(np.searchsorted(self.arrival, self._now, side="right")))
        return float(self.arrival[r]) if r < self.n_requests else None

    def admit(self, now: float) -> int:
        """Fill free slots with arrived requests while their KV fits, in arrival order
        (FIFO, no overtaking) or in the scheduler's `order`."""
        self._now = now
        r, n_req = self.next_req, self.n_requests
        if r >= n_req or self.arrival[r] > now or self.active().size == self.batch_size:
            return 0
        if self.order is None:
            candidates = None
        else:
            arrived = int(np.searchsorted(self.arrival, now, side="right"))
            candidates = self.order(r + np.flatnonzero(self.waiting[r:arrived]))
        admitted = 0
        for i, s in enumerate(np.flatnonzero(~self.occupied)):
            if candidates is None:
                r = self.next_req
                if r >= n_req or self.arrival[r] > now:
                    break
            elif i < candidates.size:
                r = int(candidates[i])
            else:
                break
            if not self.memory.fits(self.need[r]):
                break
            self._place(s, r, now)
            admitted += 1
        if admitted:
            self._active = None
            self.peak_active = max(self.peak_active, self.active().size)
        return admitted

    def _place(self, s: int, r: int, now: float) -> None:
        wl = self.wl
        self.memory.reserve(int(self.need[r]))
        self.waiting[r] = False
        if r == self.next_req:
            nxt = r + 1
            while nxt < self.n_requests and not self.waiting[nxt]:
                nxt += 1
            self.next_req = nxt
        self.occupied[s] = True
        self.req[s] = r
        self.tok[s] = 0
        self.loop[s] = 1
        self.base[s] = self.offsets[r]
        self.exit_at[s] = self.exits[self.offsets[r]]
        self.ctx[s] = wl.prompt_len[r] + 1
        self.gen[s] = wl.gen_len[r]
        self.admitted_at[r] = now
        self.prefill.append(int(wl.prompt_len[r]))
        self.prefill_req.append(r)

    def run(self, idx: np.ndarray, want_batch: bool = False) -> tuple[StepLoad, np.ndarray, StepBatch | None]:
        """Advance the given slots by one loop; return the step's load, the slots whose
        token just ran its exit loop, and (if `want_batch`) who computed, for a real backend."""
        n_loops = self.n_loops
        loops = self.loop[idx]
        exit_at = self.exit_at[idx]
        leaving = loops == exit_at  # a token run past its exit shows up in check_complete
        ctx = self.ctx[idx, loops]
        n = idx.size
        tokens, context, kv_proj = n, int(ctx.sum()), 0
        if self.owed is not None:
            fills = self.owed[idx, loops]
            nf = int(fills.sum())
            if nf:
                tokens += nf
                context += int(fills @ ctx)
                self.fill_token_loops += nf
                self.owed[idx, loops] = 0
        if self.kv.acts_on_early_exit:
            # exited before the last loop while later tokens will want its deeper KV
            early = leaving & (exit_at < n_loops) & (self.tok[idx] + 1 < self.gen[idx])
            if early.any():
                kv_proj = self.kv.projection_layers(n_loops - exit_at[early], self.layers_per_block)
                if self.owed is not None:
                    self.owed[idx[early]] += self._owed_gain[exit_at[early]]
        hist = np.bincount(loops, minlength=n_loops + 1)
        exited = idx[leaving]
        # an exit check is what leaving is: coda layers, final norm, head (one exit semantics),
        # so with checks every loop every computing token runs the coda
        coda = np.ones(n, dtype=bool) if self.checks_every_loop else leaving
        entering_context = exiting_context = 0
        if self.edge_layers:
            full = self.ctx[idx, 0]
            entering_context = int(full @ (loops == 1))
            exiting_context = int(full @ coda)
        load = StepLoad(
            tokens=tokens,
            distinct_loops=int(np.count_nonzero(hist)),
            context=context,
            entering=int(hist[1]),
            entering_context=entering_context,
            exiting=int(np.count_nonzero(coda)),
            exiting_context=exiting_context,
            heads=int(np.count_nonzero(coda)),
            kv_proj_layers=kv_proj,
            prefill=self.prefill,
        )
        batch = None
        if want_batch:
            batch = StepBatch(slots=idx, requests=self.req[idx], positions=self.tok[idx], loops=loops,
                              leaving=leaving, admitted=np.asarray(self.prefill_req, dtype=np.int64))
        self.prefill = []
        self.prefill_req = []
        self.loop[idx] = loops + 1
        self.steps += 1
        self.token_loops += n
        return load, exited, batch

    def settle_exits(self, idx: np.ndarray, loops: np.ndarray, leave: np.ndarray) -> np.ndarray:
        """exit=live: the tokens of the step just run (slots `idx` at `loops`) that the model
        let leave take this loop as their exit; return the slots whose token exited."""
        early = leave & (loops < self.exit_at[idx])
        if early.any():
            s = idx[early]
            self.exit_at[s] = loops[early]
            at = self.base[s] + self.tok[s]
            self.exits[at] = loops[early]  # the run's exits, for its metrics and token accounting
            self.wl.exit_loop[at] = loops[early]
        return idx[loops == self.exit_at[idx]]

    def emit(self, idx: np.ndarray, now: float) -> None:
        """Hand the given slots' tokens to their requests; start each request's next
        token at loop 1, or finish the request and free its slot and KV."""
        if idx.size == 0:
            return
        exit_at = self.exit_at[idx]
        req = self.req[idx]
        tok = self.tok[idx] + 1  # tokens of the request emitted once this one is
        if self.emit_log is not None:
            self.emit_log.append((req.copy(), tok - 1, now))
        self.first_token_at[req[tok == 1]] = now
        self.tok[idx] = tok
        self.emitted += idx.size
        done = tok >= self.gen[idx]
        if done.any():
            fin_req = req[done]
            self.finished_at[fin_req] = now
            self.finished += fin_req.size
            self.memory.release(int(self.need[fin_req].sum()))
            fin = idx[done]
            self.occupied[fin] = False
            self._active = None
            self.req[fin] = -1
            self.loop[fin] = 0
            self.exit_at[fin] = 0
            if self.owed is not None:
                self.owed[fin] = 0
            keep = ~done
            idx, tok, exit_at = idx[keep], tok[keep], exit_at[keep]
        if idx.size:
            self.ctx[idx] += self._kv_gain[exit_at]
            self.loop[idx] = 1
            self.exit_at[idx] = self.exits[self.base[idx] + tok]

    def check_complete(self) -> None:
        """Token conservation: every request finished, every token emitted exactly once,
        and exactly its exit loops run (a token scheduled past its exit, or emitted before
        reaching it, breaks this count). Checked once, at the end, to keep steps cheap."""
        wl = self.wl
        if self.finished != wl.num_requests or self.emitted != wl.num_tokens:
            raise InvariantError(f"finished {self.finished}/{wl.num_requests} requests and emitted "
                                 f"{self.emitted}/{wl.num_tokens} tokens")
        if self.token_loops != int(self.exits.sum()):
            raise InvariantError(f"ran {self.token_loops} token-loops but the exits add up to "
                                 f"{int(self.exits.sum())}: a token ran past its exit or emitted before it")
        if self.memory.in_use != 0:
            raise InvariantError(f"{self.memory.in_use} B of KV still reserved after the run")
