"""Lossless real-time self-speculation inside depth-wise batches (issue 25).

Weight tying lets one depth-wise step carry several rows of one request at different
loops. Row p enters loop 1; after loop d (`draft_loops`) it reads its draft of token p
(an exit check: coda, final norm, head, under the one exit semantics) and row p+1
enters loop 1 in the very next step with that draft as its input, while row p goes on
through loops d+1..N. When row p finishes loop N its final token is emitted and checked
against the draft: accepted iff the trace's `correct_d` of row p is true
(`accept=trace`, exact while every earlier draft held, since the draft's prefix is then
the true prefix), or as the real model says (`accept=live`, a clock that
`decides_acceptance`). A rejection discards every later row of the request in flight
(their work is wasted and counted) and row p+1 enters loop 1 in the next step with the
verified token. So a request advances one position every d steps while its drafts hold
and pays N - d more per rejection: it holds its slot for
N + sum over p < L-1 of (d if correct_d[p] else N) loop steps.

The engine knows each request's length, as for every scheduler: no row starts past the
last position (the last row reads no draft). Every token runs every loop, so the KV of
every loop is complete: exit and KV policies do not apply. KV memory is reserved per
request at admission as everywhere; a discarded row's KV is overwritten by its
successor. A freed slot is refilled in the next step, as under `depthwise`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.config import ExitConfig, SchedulerConfig
from sim.cost import StepLoad
from sim.drafts import check_draft_loops, draft_wrong
from sim.errors import ConfigError, InvariantError
from sim.exit_policy import Exits
from sim.registry import scheduler_registry
from sim.rows import StepRows
from sim.schedulers.base import Scheduler
from sim.slots import SlotState
from sim.step import StepBatch
from sim.trace import Trace
from sim.workload import Workload

ACCEPT = ("trace", "live")


@dataclass
class DepthwiseSpecConfig(SchedulerConfig):
    """scheduler=depthwise_spec: the loop d whose prediction drafts the next position, and
    who decides acceptance: the trace's correct_d (`trace`) or the real model (`live`).
    That d is below model.loops is checked once the model is known (`token_exits`)."""

    name: str = "depthwise_spec"
    draft_loops: int = 1
    accept: str = "trace"

    def check(self) -> None:
        super().check()
        if self.draft_loops < 1:
            raise ConfigError(f"scheduler.draft_loops={self.draft_loops} must be >= 1")
        if self.accept not in ACCEPT:
            raise ConfigError(f"scheduler.accept={self.accept!r} must be one of {', '.join(ACCEPT)}")


@dataclass
class SpecCounts:
    """What the rows did, for the run's conservation checks and its metrics."""

    rows_run: int = 0  # rows started (each one decode of one position), discarded ones included
    rows_discarded: int = 0
    row_loops: int = 0  # row-loops computed, discarded ones included
    discarded_row_loops: int = 0
    drafts_read: int = 0  # draft reads (exit path at loop d), those of discarded rows included
    verified: int = 0  # drafts checked by their row's final loop
    accepted: int = 0


@scheduler_registry.register("depthwise_spec", config=DepthwiseSpecConfig, label="depth-wise self-speculative",
                             color="#56B4E9", order=5)
class DepthwiseSpecScheduler(Scheduler):
    honours_exits = False  # every emitted token is the final loop's: exit policies do not apply
    cfg: DepthwiseSpecConfig

    def __init__(self, state: SlotState, cfg: DepthwiseSpecConfig):
        super().__init__(state, cfg)
        n, d = state.n_loops, cfg.draft_loops
        check_draft_loops(d, n)
        if state.rows is None or state.rows.loop.shape[1] < -(-n // d):
            raise InvariantError(f"slots built without room for ceil(N/d) = {-(-n // d)} rows: use make_state")
        self.n_loops, self.draft_loops = n, d
        self.accepts_live = cfg.accept == "live"
        self.right = ~state.wl.wrong  # per token: its draft equals its final token (accept=trace)
        self.counts = SpecCounts()
        self._ran: tuple[np.ndarray, ...] | None = None  # the rows of the step just run
        self._accepted = np.zeros(0, dtype=bool)
        self._rejected = np.zeros(state.batch_size, dtype=bool)  # scratch: slots rejecting in this step

    @classmethod
    def token_exits(cls, trace: Trace, exit_cfg: ExitConfig, cfg: DepthwiseSpecConfig, loops: int) -> Exits:
        """Every token runs all N loops; `wrong` carries whether loop d's draft differs from
        the final token (accept=trace; under accept=live the real model says so)."""
        if cfg.accept == "live":
            check_draft_loops(cfg.draft_loops, loops)
            wrong = np.zeros(trace.num_tokens, dtype=bool)
        else:
            wrong = draft_wrong(trace, cfg.draft_loops, loops, "depthwise_spec")
        return np.full(trace.num_tokens, loops, dtype=np.int8), wrong

    @classmethod
    def make_state(cls, cfg: DepthwiseSpecConfig, wl: Workload, *args: Any, **kwargs: Any) -> SlotState:
        # rows of a request are d loops apart: at most ceil(N/d) in flight at once
        return SlotState(wl, *args, rows_per_slot=-(-wl.num_loops // cfg.draft_loops), **kwargs)

    def computing(self) -> np.ndarray:
        st = self.state
        idx = st.active()
        rows = st.rows
        fresh = idx[rows.count[idx] == 0]
        if fresh.size:  # newly admitted: the first row enters loop 1 in this step
            rows.start(fresh)
            self.counts.rows_run += fresh.size
        return idx

    def step(self, idx: np.ndarray, want_batch: bool) -> tuple[StepLoad, np.ndarray, StepBatch | None]:
        """Every row in flight of every resident request runs its next loop."""
        st, sl, rows = self.state, self.state.slots, self.state.rows
        s, j = rows.of(idx)
        loops = rows.loop[s, j]
        positions = sl.tok[s] + j
        gen = sl.gen[s]
        if (positions >= gen).any():
            raise InvariantError("a row runs past its request's last position")
        leaving = loops == self.n_loops
        drafting = (loops == self.draft_loops) & (positions + 1 < gen)  # the last row drafts nothing
        context = sl.prompt[s] + positions + 1  # every earlier position, at every loop
        rows.loop[s, j] = loops + 1
        self._ran = (s, positions, leaving, drafting)
        self.counts.row_loops += s.size
        # rows of one request are d loops apart, never two at one loop: no KV read is shared;
        # and every resident request has a row in flight, so every slot of idx is busy
        load, batch = st.run_rows(StepRows(s, positions, loops, context, leaving, drafting), want_batch,
                                  kv_shared=0, busy=idx.size)
        return load, s[leaving], batch

    def settle_acceptance(self, accepted: np.ndarray) -> None:
        self._accepted = np.asarray(accepted, dtype=bool)

    def after_step(self, exited: np.ndarray, now: float) -> None:
        """Verify and emit the rows that finished loop N, discard behind a rejected draft,
        start the rows that drafts (or verified tokens) feed, then refill freed slots."""
        st, sl, rows, c = self.state, self.state.slots, self.state.rows, self.counts
        s, positions, leaving, drafting = self._ran
        c.drafts_read += int(np.count_nonzero(drafting))
        if exited.size:  # a slot's finishing row is its oldest
            at = positions[leaving]
            drafted = at + 1 < sl.gen[exited]  # a later row ran on its draft
            ok = self._accepted[leaving] if self.accepts_live else self.right[sl.base[exited] + at]
            rejected = exited[drafted & ~ok]
            c.verified += int(np.count_nonzero(drafted))
            c.accepted += int(np.count_nonzero(drafted & ok))
            rows.pop_front(exited)
            if rejected.size:
                dropped, ran = rows.clear(rejected)
                c.rows_discarded += dropped
                c.discarded_row_loops += ran
                gone = self._rejected
                gone[rejected] = True
                drafting = drafting & ~gone[s]  # a discarded row's draft feeds nothing
                gone[rejected] = False
            st.deliver(exited, now)  # a finished request frees its slot
            if rejected.size:  # the verified token feeds the next position (never past the last)
                rows.start(rejected)
                c.rows_run += rejected.size
        feeding = s[drafting]
        if feeding.size:
            rows.start(feeding)
            c.rows_run += feeding.size
        st.admit(now)

    def shown_loops(self, idx: np.ndarray) -> np.ndarray:
        return self.state.rows.loop[idx, 0]  # the deepest row's

    def check_complete(self) -> None:
        """Token conservation, and the rows' own: every token ran exactly one kept row of N
        loops, every other row and row-loop was discarded, and (accept=trace) each position
        before a request's last had its draft verified once."""
        st, c, n = self.state, self.counts, self.n_loops
        st.check_tokens()
        tokens = st.wl.num_tokens
        if c.rows_run != tokens + c.rows_discarded:
            raise InvariantError(f"{c.rows_run} rows ran for {tokens} tokens and {c.rows_discarded} discarded")
        if c.row_loops != n * tokens + c.discarded_row_loops:
            raise InvariantError(f"{c.row_loops} row-loops ran for {tokens} tokens of {n} loops and "
                                 f"{c.discarded_row_loops} discarded")
        if c.verified != tokens - st.wl.num_requests:
            raise InvariantError(f"{c.verified} drafts verified for {tokens - st.wl.num_requests} positions "
                                 f"before a request's last")

    def extra_metrics(self) -> dict[str, Any]:
        c, steps = self.counts, self.state.stats.steps
        return {
            "accuracy_cost": 0.0,  # every emitted token is the final loop's
            "draft_loops": self.draft_loops,
            "accept": self.cfg.accept,
            "drafts_read": c.drafts_read,
            "verified_drafts": c.verified,
            "accepted_drafts": c.accepted,
            "acceptance_rate": c.accepted / c.verified if c.verified else float("nan"),
            "rows_run": c.rows_run,
            "rows_discarded": c.rows_discarded,
            "row_loops": c.row_loops,
            "discarded_row_loops": c.discarded_row_loops,
            "mean_rows_per_step": c.row_loops / steps if steps else float("nan"),
        }
