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
from sim.drafts import draft_wrong
from sim.errors import ConfigError, InvariantError
from sim.exit_policy import Exits
from sim.registry import scheduler_registry
from sim.rows import StepRows
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


@dataclass
class RoundCounts:
    """What the rounds did, for the run's shape checks and its metrics."""

    iterations: int = 0
    rounds: int = 0  # request-rounds
    drafted: int = 0  # drafted tokens (= verified tokens)
    accepted: int = 0  # drafts accepted
    draft_steps: int = 0
    verify_steps: int = 0
    draft_token_loops: int = 0
    verify_token_loops: int = 0


def round_emits(run_at_p: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Tokens a round emits: the a = min(run, k) accepted drafts, plus the verified token at
    the first mismatch when there is one (a < k)."""
    a = np.minimum(run_at_p, k)
    return np.where(a < k, a + 1, k)


@scheduler_registry.register("speculative", config=SpeculativeConfig, label="self-speculative",
                             color="#D55E00", order=4, figures="speculative")
class SpeculativeScheduler(Scheduler):
    """Rounds of K drafted rows per slot (`SlotState.rows`, sim/rows.py), stepped in the
    iteration's fixed shape: draft step i runs row i of every slot still drafting, at loops
    1..d; the verify pass runs all of a slot's rows at loops d+1..N together. The iteration
    ends by accepting and emitting. The state's `token_loops` counts busy slot-steps (for
    slot utilization); the drafted row-loops are counted apart."""

    honours_exits = False  # every emitted token is the final loop's: exit policies do not apply
    cfg: SpeculativeConfig

    def __init__(self, state: SlotState, cfg: SpeculativeConfig):
        super().__init__(state, cfg)
        n, d, K = state.n_loops, cfg.draft_loops, cfg.draft_len
        if not 1 <= d < n:
            raise InvariantError(f"draft_loops={d} outside 1..{n - 1}")
        if state.rows is None or state.rows.loop.shape[1] < K:
            raise InvariantError(f"slots built without room for K={K} rows: use make_state")
        self.draft_len, self.draft_loops = K, d
        self.draft_phase = K * d  # loop steps of drafting per iteration
        self.round_steps = self.draft_phase + n - d
        # wl.wrong carries, per token, whether the loop-d draft differs from the final token
        self.run_len = accepted_runs(~state.wl.wrong, state.offsets)
        rows = state.batch_size * K
        self._true, self._false = np.ones(rows, dtype=bool), np.zeros(rows, dtype=bool)  # sliced per step
        self.phase = self.round_steps  # loop steps done in the current iteration (== round_steps: none)
        self.counts = RoundCounts()

    @classmethod
    def token_exits(cls, trace: Trace, exit_cfg: ExitConfig, cfg: SpeculativeConfig, loops: int) -> Exits:
        """Every token runs all N loops (in its draft and verify passes); `wrong` carries
        whether loop d's draft differs from the final token, which decides acceptance."""
        wrong = draft_wrong(trace, cfg.draft_loops, loops, "speculative")
        return np.full(trace.num_tokens, loops, dtype=np.int8), wrong

    @classmethod
    def make_state(cls, cfg: SpeculativeConfig, *args: Any, **kwargs: Any) -> SlotState:
        return SlotState(*args, rows_per_slot=cfg.draft_len, **kwargs)

    def begin_iteration(self) -> None:
        st = self.state
        idx = st.active()
        st.rows.fill(idx, np.minimum(self.draft_len, st.slots.gen[idx] - st.slots.tok[idx]))  # k drafts each
        self.phase = 0
        self.counts.iterations += 1
        self.counts.rounds += idx.size

    def _step_shape(self) -> tuple[int, int]:
        """(draft index i or -1 in the verify pass, loop) of the iteration's next step."""
        t, d = self.phase, self.draft_loops
        if t < self.draft_phase:
            i, j = divmod(t, d)
            return i, j + 1
        return -1, d + 1 + t - self.draft_phase

    def shown_loops(self, idx: np.ndarray) -> np.ndarray:
        if self.phase >= self.round_steps:
            return np.zeros(idx.size, dtype=np.int64)
        i, loop = self._step_shape()
        return np.where(self.state.rows.count[idx] > i, loop, 0)

    def computing(self) -> np.ndarray:
        st = self.state
        if self.phase == self.round_steps:  # a new iteration starts with whoever is resident now
            if st.active().size == 0:
                return st.active()
            self.begin_iteration()
        return st.active()

    def step(self, idx: np.ndarray, want_batch: bool) -> tuple[StepLoad, np.ndarray, StepBatch | None]:
        """One loop step of the iteration: draft step i at loop j (row i of each slot still
        drafting), or verify at loop j (every row of each slot, k per slot)."""
        if self.phase >= self.round_steps:
            raise InvariantError("a speculative step ran outside an iteration")
        st, rows, c = self.state, self.state.rows, self.counts
        i, loop = self._step_shape()
        if i >= 0:  # draft: position p + i, attending to prompt, emitted tokens and earlier drafts
            s = idx[rows.count[idx] > i]
            j = i
            column = rows.loop[:, i]  # row i of every slot (a view: cheaper than indexing pairs)
            loops = column[s]
            column[s] = loops + 1
            busy = s.size
            c.draft_steps += 1
            c.draft_token_loops += s.size
        else:  # verify: k positions per slot at once, each attending causally within the round
            s, j = rows.of(idx)
            loops = rows.loop[s, j]
            rows.loop[s, j] = loops + 1
            busy = idx.size
            c.verify_steps += 1
            c.verify_token_loops += s.size
        # every row is at `loop`: the iteration's shape (check_complete counts it)
        sl = st.slots
        positions = sl.tok[s] + j
        context = sl.prompt[s] + positions + 1
        n = s.size
        # the exit path (coda and head) ends the draft at loop d and the verify pass at loop N
        at_head = (self._true if loop == (self.draft_loops if i >= 0 else st.n_loops) else self._false)[:n]
        none = self._false[:n]
        step_rows = StepRows(s, positions, loops, context, leaving=none if i >= 0 else at_head,
                             drafting=at_head if i >= 0 else none)
        # a draft step has one row per slot: no KV read is shared
        load, batch = st.run_rows(step_rows, want_batch, contract_drafting=False,
                                  kv_shared=0 if i >= 0 else None, busy=busy)
        self.phase += 1
        return load, idx[:0], batch

    def after_step(self, exited: np.ndarray, now: float) -> None:
        if self.phase == self.round_steps:
            self.end_iteration(now)
            self.state.admit(now)

    def end_iteration(self, now: float) -> None:
        """Accept each round's longest correct prefix and emit its tokens."""
        st = self.state
        idx = st.active()
        k = st.rows.count[idx]
        run = self.run_len[st.slots.base[idx] + st.slots.tok[idx]]
        emits = round_emits(run, k)
        self.counts.drafted += int(k.sum())
        self.counts.accepted += int(np.minimum(run, k).sum())
        st.rows.clear(idx)  # rejected drafts are dropped; the next round drafts afresh
        st.deliver(idx, now, emits)

    def check_complete(self) -> None:
        """Token conservation, and the iteration's shape: every iteration ran K*d draft and
        N-d verify steps, and every drafted token ran d draft loops and N-d verify loops."""
        self.state.check_tokens()
        c, d, n = self.counts, self.draft_loops, self.state.n_loops
        if (c.draft_steps != c.iterations * self.draft_phase
                or c.verify_steps != c.iterations * (n - d)):
            raise InvariantError(f"{c.iterations} iterations ran {c.draft_steps} draft and "
                                 f"{c.verify_steps} verify steps")
        if c.draft_token_loops != d * c.drafted or c.verify_token_loops != (n - d) * c.drafted:
            raise InvariantError(f"{c.drafted} drafted tokens ran {c.draft_token_loops} draft and "
                                 f"{c.verify_token_loops} verify token-loops")

    def extra_metrics(self) -> dict[str, Any]:
        c = self.counts
        return {
            "accuracy_cost": 0.0,  # the verify pass emits the final loop's tokens, never a draft's
            "draft_len": self.draft_len,
            "draft_loops": self.draft_loops,
            "iterations": c.iterations,
            "rounds": c.rounds,
            "draft_steps": c.draft_steps,
            "verify_steps": c.verify_steps,
            "drafted_tokens": c.drafted,
            "accepted_drafts": c.accepted,
            "acceptance_rate": c.accepted / c.drafted if c.drafted else float("nan"),
            "mean_tokens_per_round": self.state.stats.emitted / c.rounds if c.rounds else float("nan"),
        }
