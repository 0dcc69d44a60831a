"""Per-slot bookkeeping shared by every scheduler: the state of the batch.

A slot holds one request at a time and, within it, the one token being decoded
(generation is autoregressive, so a request never has two tokens in flight).
All per-slot state lives in numpy arrays so that one engine step costs a fixed
handful of vector operations whatever the batch size, and no Python object
exists per token. Schedulers only decide *which* slots compute in the next loop
step and *when* tokens are emitted and requests admitted; the mechanics of doing
so live here, once.
"""

from __future__ import annotations

import numpy as np

from sim.cost import StepLoad
from sim.errors import ConfigError, InvariantError
from sim.memory import KVMemory
from sim.workload import Workload


class SlotState:
    def __init__(self, wl: Workload, batch_size: int, memory: KVMemory, kv_policy: str,
                 layers_per_block: int, checks_every_loop: bool):
        self.wl = wl
        self.n_loops = wl.num_loops
        self.batch_size = batch_size
        self.memory = memory
        self.kv_policy = kv_policy
        self.layers_per_block = layers_per_block
        self.checks_every_loop = checks_every_loop
        self.exits = wl.exit_loop.astype(np.int64)
        self.offsets = wl.offsets
        self.need = memory.per_token * (wl.prompt_len + wl.gen_len)
        if memory.limited and wl.num_requests:
            worst = int(np.argmax(self.need))
            if self.need[worst] > memory.capacity:
                raise ConfigError(
                    f"request {worst} needs {self.need[worst] / 1e9:.2f} GB of KV cache "
                    f"({wl.prompt_len[worst]} prompt + {wl.gen_len[worst]} generated tokens) but only "
                    f"{memory.capacity / 1e9:.2f} GB are free after the weights: it can never run")
        b = batch_size
        self.occupied = np.zeros(b, dtype=bool)
        self.req = np.full(b, -1, dtype=np.int64)
        self.tok = np.zeros(b, dtype=np.int64)  # position of the token in flight
        self.loop = np.zeros(b, dtype=np.int64)  # next loop it runs; > exit_at once it has exited
        self.exit_at = np.zeros(b, dtype=np.int64)
        self.prompt = np.zeros(b, dtype=np.int64)
        # Earlier tokens of the request holding KV at each loop. With kv_policy=ignore an
        # exited token leaves no KV deeper than its exit loop, so deeper loops attend to
        # fewer positions (and read less); every other policy fills or shares all loops.
        self.reached = np.zeros((b, self.n_loops + 2), dtype=np.int64)
        self._loop_cols = np.arange(self.n_loops + 2)
        self.gen = np.zeros(b, dtype=np.int64)
        self.base = np.zeros(b, dtype=np.int64)  # offset of the slot's request in the token arrays
        # KV fills owed per loop by exited tokens (kv_policy=recompute), paid when the slot's
        # next token runs that loop: FREE's synchronized parallel decoding.
        self.owed = np.zeros((b, self.n_loops + 2), dtype=np.int64) if kv_policy == "recompute" else None
        n_req = wl.num_requests
        self.admitted_at = np.full(n_req, np.nan)
        self.first_token_at = np.full(n_req, np.nan)
        self.finished_at = np.full(n_req, np.nan)
        self.next_req = 0
        self.finished = 0
        self.emitted = 0
        self.prefill: list[int] = []
        # (request, position, time) of every emitted token, when a test asks for it
        self.emit_log: list[tuple[np.ndarray, np.ndarray, float]] | None = None
        # counters for metrics
        self.steps = 0
        self.token_loops = 0  # useful loop work (fills excluded)
        self.fill_token_loops = 0
        self.peak_active = 0
        self.loop_hist = np.zeros(self.n_loops + 2, dtype=np.int64)  # token-loops per loop index

    @property
    def done(self) -> bool:
        return self.finished == self.wl.num_requests

    def next_arrival(self) -> float | None:
        return float(self.wl.arrival[self.next_req]) if self.next_req < self.wl.num_requests else None

    def admit(self, now: float) -> int:
        """Fill free slots with arrived requests, FIFO, while their KV fits (no overtaking)."""
        wl, admitted = self.wl, 0
        free = np.flatnonzero(~self.occupied)
        for s in free:
            r = self.next_req
            if r >= wl.num_requests or wl.arrival[r] > now or not self.memory.fits(self.need[r]):
                break
            self.memory.reserve(int(self.need[r]))
            self.next_req += 1
            self.occupied[s] = True
            self.req[s] = r
            self.tok[s] = 0
            self.loop[s] = 1
            self.base[s] = self.offsets[r]
            self.exit_at[s] = self.exits[self.offsets[r]]
            self.prompt[s] = wl.prompt_len[r]
            self.reached[s] = 0
            self.gen[s] = wl.gen_len[r]
            self.admitted_at[r] = now
            self.prefill.append(int(wl.prompt_len[r]))
            admitted += 1
        if admitted:
            active = int(np.count_nonzero(self.occupied))
            if active > self.peak_active:
                self.peak_active = active
        return admitted

    def run(self, mask: np.ndarray) -> tuple[StepLoad, np.ndarray]:
        """Advance the masked slots by one loop; return the step's load and which tokens exited."""
        idx = np.flatnonzero(mask)
        loops = self.loop[idx]
        exit_at = self.exit_at[idx]
        if np.any(loops > exit_at):
            raise InvariantError("a token that had already exited was scheduled again")
        prompt = self.prompt[idx]
        ctx = prompt + self.reached[idx, loops] + 1  # attended positions at this loop, itself included
        n = idx.size
        entering = loops == 1
        leaving = loops == exit_at
        tokens, context, kv_proj = n, int(ctx.sum()), 0
        if self.owed is not None:
            fills = self.owed[idx, loops]
            if fills.any():
                nf = int(fills.sum())
                tokens += nf
                context += int((fills * ctx).sum())
                self.fill_token_loops += nf
                self.owed[idx, loops] = 0
        early = leaving & (exit_at < self.n_loops) & (self.tok[idx] + 1 < self.gen[idx])
        if early.any():  # exited before the last loop, and later tokens will want its deeper KV
            if self.kv_policy == "propagate":
                kv_proj = int((self.n_loops - exit_at[early]).sum()) * self.layers_per_block
            elif self.owed is not None:
                cols, e = self._loop_cols[None, :], exit_at[early][:, None]
                self.owed[idx[early]] += (cols > e) & (cols <= self.n_loops)
        hist = np.bincount(loops, minlength=self.n_loops + 2)
        self.loop_hist += hist
        n_leaving = int(np.count_nonzero(leaving))
        load = StepLoad(
            tokens=tokens,
            distinct_loops=int(np.count_nonzero(hist)),
            context=context,
            entering=int(np.count_nonzero(entering)),
            entering_context=int((prompt + self.tok[idx] + 1)[entering].sum()),
            exiting=n_leaving,
            exiting_context=int((prompt + self.tok[idx] + 1)[leaving].sum()),
            heads=n if self.checks_every_loop else int(hist[self.n_loops]),
            kv_proj_layers=kv_proj,
            prefill=self.prefill,
        )
        self.prefill = []
        self.loop[idx] = loops + 1
        self.steps += 1
        self.token_loops += n
        exited = np.zeros(self.batch_size, dtype=bool)
        exited[idx[leaving]] = True
        return load, exited

    def emit(self, mask: np.ndarray, now: float) -> None:
        """Hand the masked slots' tokens to their requests; start each request's next
        token at loop 1, or finish the request and free its slot and KV."""
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return
        if np.any(self.loop[idx] <= self.exit_at[idx]):
            raise InvariantError("a token was emitted before reaching its exit loop")
        req = self.req[idx]
        tok = self.tok[idx]
        if self.emit_log is not None:
            self.emit_log.append((req.copy(), tok.copy(), now))
        first = tok == 0
        self.first_token_at[req[first]] = now
        tok += 1
        self.tok[idx] = tok
        self.emitted += idx.size
        done = tok >= self.gen[idx]
        if done.any():
            fin = idx[done]
            fin_req = req[done]
            self.finished_at[fin_req] = now
            self.finished += fin.size
            for r in fin_req:
                self.memory.release(int(self.need[r]))
            self.occupied[fin] = False
            self.req[fin] = -1
            self.loop[fin] = 0
            self.exit_at[fin] = 0
            if self.owed is not None:
                self.owed[fin] = 0
        cont = idx[~done]
        if cont.size:
            depth = self.exit_at[cont] if self.kv_policy == "ignore" else self.n_loops
            self.reached[cont] += self._loop_cols[None, :] <= np.atleast_1d(depth)[:, None]
            self.loop[cont] = 1
            self.exit_at[cont] = self.exits[self.base[cont] + self.tok[cont]]

    def check_complete(self) -> None:
        """Token conservation: every request finished, every token emitted exactly once."""
        wl = self.wl
        if self.finished != wl.num_requests or self.emitted != wl.num_tokens:
            raise InvariantError(f"finished {self.finished}/{wl.num_requests} requests and emitted "
                                 f"{self.emitted}/{wl.num_tokens} tokens")
        if self.token_loops != int(self.exits.sum()):
            raise InvariantError(f"ran {self.token_loops} token-loops but the exits add up to {int(self.exits.sum())}")
        if self.memory.in_use != 0:
            raise InvariantError(f"{self.memory.in_use} B of KV still reserved after the run")
