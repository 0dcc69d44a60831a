"""Self-speculative decoding: the model's own first loops draft, its remaining loops verify.

A request decodes in rounds. A round at position p drafts k = min(K, tokens left) tokens
one at a time through loops 1..d (each draft step ends in the model's exit path: coda
layers and LM head), then verifies all k in one pass of loops d+1..N that reuses their
loop-1..d states, as LayerSkip does. It accepts the longest prefix of drafts that equal
the final token (a of them) and emits a + 1 tokens (the accepted ones and the verified
token at the first mismatch), or k when all are accepted: the last draft never ran as an
input, so the verify pass has no prediction after it (no bonus token).

Acceptance is replayed from the trace, exactly: `correct_d` says loop d's prediction given
the true prefix equals the final token, and while every earlier draft of the round was
accepted the draft's prefix *is* the true prefix.

Batching is lockstep. An iteration is one round of every resident request and lasts
K*d + (N-d) loop steps whatever the drafts' lengths: a request whose draft is shortened at
its end idles through the draft steps it does not need (its slot waits, like an exited
token under sync_exit), and a step in which no slot drafts still elapses, as a fixed-shape
step would. Requests join and leave at iteration boundaries, as under `continuous`. KV: a
round writes every loop's KV for its drafted positions and keeps it only for the tokens it
emits (the rest is discarded); memory is reserved per request up front, as for every
scheduler, so rejected drafts never need more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.config import ExitConfig, SchedulerConfig
from sim.cost import StepLoad
from sim.errors import ConfigError, InvariantError, TraceError
from sim.exit import Exits
from sim.registry import scheduler_registry
from sim.schedulers.base import Scheduler
from sim.slots import SlotState
from sim.step import StepBatch
from sim.trace import Trace


@dataclass
class SpeculativeConfig(SchedulerConfig):
    """scheduler=speculative: tokens drafted per round (K) and the loops the draft runs (d).
    That d is below model.loops is checked once the model is known (`token_exits`)."""

    name: str = "speculative"
    draft_len: int = 4
    draft_loops: int = 1

    def check(self) -> None:
        super().check()
        if self.draft_len < 1:
            raise ConfigError(f"scheduler.draft_len={self.draft_len} must be >= 1")
        if self.draft_loops < 1:
            raise ConfigError(f"scheduler.draft_loops={self.draft_loops} must be >= 1")


def accepted_runs(accepted: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per token: how many consecutive drafts, starting with its own, are accepted before the
    first rejection or the end of its request. A round at position p accepts min(run[p], k)."""
    n = accepted.size
    idx = np.arange(n)
    miss = np.where(accepted, n, idx)
    next_miss = np.minimum.accumulate(miss[::-1])[::-1]
    end = np.repeat(offsets[1:], np.diff(offsets))  # one past each token's request
    return np.minimum(next_miss, end) - idx


def round_emits(run_at_p: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Tokens a round emits: the a = min(run, k) accepted drafts, plus the verified token at
    the first mismatch when there is one (a < k)."""
    a = np.minimum(run_at_p, k)
    return np.where(a < k, a + 1, k)


class SpeculativeSlots(SlotState):
    """Slots that decode a round (up to K tokens) at a time instead of one token.

    `SlotState` admits, reserves KV and keeps the request timestamps; this class replaces
    the per-token mechanics: `run` prices the current step of the iteration (a draft or a
    verify loop step), `end_iteration` accepts and emits. `token_loops` counts busy
    slot-steps (for slot utilization); the drafted token-loops are counted apart."""

    def __init__(self, *args: Any, draft_len: int, draft_loops: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        n = self.n_loops
        if not 1 <= draft_loops < n:
            raise InvariantError(f"draft_loops={draft_loops} outside 1..{n - 1}")
        self.draft_len, self.draft_loops = draft_len, draft_loops
        self.draft_phase = draft_len * draft_loops  # loop steps of drafting per iteration
        self.round_steps = self.draft_phase + n - draft_loops
        # wl.wrong carries, per token, whether the loop-d draft differs from the final token
        self.run_len = accepted_runs(~self.wl.wrong, self.offsets)
        self.draft = np.zeros(self.batch_size, dtype=np.int64)  # k of each slot's round
        self.phase = self.round_steps  # loop steps done in the current iteration (== round_steps: none)
        self.iterations = 0
        self.rounds = 0  # request-rounds
        self.drafted = 0  # drafted tokens (= verified tokens)
        self.accepted = 0  # drafts accepted
        self.draft_steps = 0
        self.verify_steps = 0
        self.draft_token_loops = 0
        self.verify_token_loops = 0

    def begin_iteration(self) -> None:
        idx = self.active()
        self.draft[idx] = np.minimum(self.draft_len, self.gen[idx] - self.tok[idx])
        self.phase = 0
        self.iterations += 1
        self.rounds += idx.size
        self._show_loops(idx)

    def _step_shape(self) -> tuple[int, int]:
        """(draft index i or -1 in the verify pass, loop) of the iteration's next step."""
        t, d = self.phase, self.draft_loops
        if t < self.draft_phase:
            i, j = divmod(t, d)
            return i, j + 1
        return -1, d + 1 + t - self.draft_phase

    def _show_loops(self, idx: np.ndarray) -> None:
        """`loop` says what each slot runs in the next step (0: idles), for timelines."""
        self.loop[idx] = 0
        if self.phase < self.round_steps:
            i, loop = self._step_shape()
            self.loop[idx[self.draft[idx] > i]] = loop

    def run(self, idx: np.ndarray, want_batch: bool = False) -> tuple[StepLoad, np.ndarray, StepBatch | None]:
        """One loop step of the iteration: draft step i at loop j (one token per slot still
        drafting), or verify at loop j (each slot's k drafted tokens)."""
        if self.phase >= self.round_steps:
            raise InvariantError("a speculative step ran outside an iteration")
        i, loop = self._step_shape()
        k = self.draft[idx]
        first = self.wl.prompt_len[self.req[idx]] + self.tok[idx] + 1  # context of the round's first position
        if i >= 0:  # draft: position p + i, attending to prompt, emitted tokens and earlier drafts
            on = k > i
            slots, per_slot = idx[on], np.ones(int(on.sum()), dtype=np.int64)
            tokens = slots.size
            context, shared = int((first[on] + i).sum()), 0
            entering, leaving = loop == 1, loop == self.draft_loops  # prelude; exit path (coda + head)
            positions = self.tok[slots] + i
            self.draft_steps += 1
            self.draft_token_loops += tokens
        else:  # verify: k positions per slot at once, each attending causally within the round
            slots, per_slot = idx, k
            tokens = int(k.sum())
            context = int((k * first + k * (k - 1) // 2).sum())
            shared = context - int((first + k - 1).sum())  # a request's KV is read once for its k queries
            entering, leaving = False, loop == self.n_loops
            positions = np.repeat(self.tok[idx], k) + (np.arange(tokens) - np.repeat(np.cumsum(k) - k, k))
            self.verify_steps += 1
            self.verify_token_loops += tokens
        load = StepLoad(
            tokens=tokens,
            distinct_loops=1 if tokens else 0,
            context=context,
            entering=tokens if entering else 0,
            entering_context=context if entering else 0,
            exiting=tokens if leaving else 0,
            exiting_context=context if leaving else 0,
            heads=tokens if leaving else 0,
            kv_proj_layers=0,
            prefill=self.prefill,
            kv_shared=shared,
        )
        batch = None
        if want_batch:  # one entry per token: a verify step has k per slot
            rows = np.repeat(slots, per_slot)
            batch = StepBatch(slots=rows, requests=self.req[rows], positions=positions,
                              loops=np.full(rows.size, loop, dtype=np.int64),
                              leaving=np.full(rows.size, leaving),
                              admitted=np.asarray(self.prefill_req, dtype=np.int64))
        self.prefill = []
        self.prefill_req = []
        self.steps += 1
        self.token_loops += slots.size
        self.phase += 1
        self._show_loops(idx)
        return load, idx[:0], batch

    def end_iteration(self, now: float) -> None:
        """Accept each round's longest correct prefix and emit its tokens."""
        idx = self.active()
        k = self.draft[idx]
        run = self.run_len[self.base[idx] + self.tok[idx]]
        emits = round_emits(run, k)
        self.drafted += int(k.sum())
        self.accepted += int(np.minimum(run, k).sum())
        self.draft[idx] = 0
        self._emit_many(idx, emits, now)

    def _emit_many(self, idx: np.ndarray, count: np.ndarray, now: float) -> None:
        """`SlotState.emit` for `count` tokens per slot at once."""
        req, start = self.req[idx], self.tok[idx]
        tok = start + count
        if self.emit_log is not None:
            total = int(count.sum())
            within = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
            self.emit_log.append((np.repeat(req, count), np.repeat(start, count) + within, now))
        self.first_token_at[req[start == 0]] = now
        self.tok[idx] = tok
        self.emitted += int(count.sum())
        done = tok >= self.gen[idx]
        if done.any():
            fin, fin_req = idx[done], req[done]
            self.finished_at[fin_req] = now
            self.finished += fin_req.size
            self.memory.release(int(self.need[fin_req].sum()))
            self.occupied[fin] = False
            self._active = None
            self.req[fin] = -1
            self.loop[fin] = 0

    def check_complete(self) -> None:
        """Token conservation, and the iteration's shape: every iteration ran K*d draft and
        N-d verify steps, and every drafted token ran d draft loops and N-d verify loops."""
        wl, d, n = self.wl, self.draft_loops, self.n_loops
        if self.finished != wl.num_requests or self.emitted != wl.num_tokens:
            raise InvariantError(f"finished {self.finished}/{wl.num_requests} requests and emitted "
                                 f"{self.emitted}/{wl.num_tokens} tokens")
        if (self.draft_steps != self.iterations * self.draft_phase
                or self.verify_steps != self.iterations * (n - d)):
            raise InvariantError(f"{self.iterations} iterations ran {self.draft_steps} draft and "
                                 f"{self.verify_steps} verify steps")
        if self.draft_token_loops != d * self.drafted or self.verify_token_loops != (n - d) * self.drafted:
            raise InvariantError(f"{self.drafted} drafted tokens ran {self.draft_token_loops} draft and "
                                 f"{self.verify_token_loops} verify token-loops")
        if self.memory.in_use != 0:
            raise InvariantError(f"{self.memory.in_use} B of KV still reserved after the run")


@scheduler_registry.register("speculative", config=SpeculativeConfig, label="self-speculative",
                             color="#D55E00", order=4, figures="speculative")
class SpeculativeScheduler(Scheduler):
    honours_exits = False  # every emitted token is the final loop's: exit policies do not apply
    state: SpeculativeSlots
    cfg: SpeculativeConfig

    def __init__(self, state: SpeculativeSlots, cfg: SpeculativeConfig):
        super().__init__(state, cfg)
        if (state.draft_len, state.draft_loops) != (cfg.draft_len, cfg.draft_loops):
            raise InvariantError(f"slots built for K={state.draft_len}, d={state.draft_loops} "
                                 f"but scheduler.draft_len={cfg.draft_len}, draft_loops={cfg.draft_loops}")

    @classmethod
    def token_exits(cls, trace: Trace, exit_cfg: ExitConfig, cfg: SpeculativeConfig, loops: int) -> Exits:
        """Every token runs all N loops (in its draft and verify passes); `wrong` carries
        whether loop d's draft differs from the final token, which decides acceptance."""
        d = cfg.draft_loops
        if not 1 <= d < loops:
            raise ConfigError(f"scheduler.draft_loops={d} must be in 1..model.loops-1 (model.loops={loops}): "
                              f"the draft runs fewer loops than the model")
        if trace.correct is None:
            raise TraceError(f"{trace.path}: scheduler=speculative needs column correct_{d} (does loop {d}'s "
                             f"prediction equal the final token?), which the trace lacks")
        return np.full(trace.num_tokens, loops, dtype=np.int8), ~trace.correct[:, d - 1]

    @classmethod
    def make_state(cls, cfg: SpeculativeConfig, *args: Any, **kwargs: Any) -> SpeculativeSlots:
        return SpeculativeSlots(*args, draft_len=cfg.draft_len, draft_loops=cfg.draft_loops, **kwargs)

    def computing(self) -> np.ndarray:
        st = self.state
        if st.phase == st.round_steps:  # a new iteration starts with whoever is resident now
            if st.active().size == 0:
                return st.active()
            st.begin_iteration()
        return st.active()

    def after_step(self, exited: np.ndarray, now: float) -> None:
        st = self.state
        if st.phase == st.round_steps:
            st.end_iteration(now)
            st.admit(now)

    def extra_metrics(self) -> dict[str, Any]:
        st = self.state
        return {
            "accuracy_cost": 0.0,  # the verify pass emits the final loop's tokens, never a draft's
            "draft_len": st.draft_len,
            "draft_loops": st.draft_loops,
            "iterations": st.iterations,
            "rounds": st.rounds,
            "draft_steps": st.draft_steps,
            "verify_steps": st.verify_steps,
            "drafted_tokens": st.drafted,
            "accepted_drafts": st.accepted,
            "acceptance_rate": st.accepted / st.drafted if st.drafted else float("nan"),
            "mean_tokens_per_round": st.emitted / st.rounds if st.rounds else float("nan"),
        }
