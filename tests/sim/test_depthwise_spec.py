"""scheduler=depthwise_spec against an independent reference written from issue 25's
semantics in plain Python, with no simulator code.

Per request of length L, with c[p] = correct_d of position p: row p starts at step s_p
(s_0 = 1; s_{p+1} = s_p + d if c[p] else s_p + N), reads its draft at s_p + d - 1 (p < L-1),
and is emitted at s_p + N - 1, so the request holds its slot for N + sum_{p<L-1} (d if c[p]
else N) steps. A rejection at p discards the rows p+j (j >= 1, j*d <= N-1, p+j <= L-1) that
started on its draft; row p+j ran N - j*d loops, and read a draft if (j+1)*d <= N and p+j < L-1.
Offline, requests take the earliest freed slot in FIFO order (a freed slot is refilled in the
next step). Under cost=constant a step costs loop_step_s, plus prefill_s per request whose
prompt is prefilled before it (the step its first row runs), plus head_s if any row runs the
exit path (a draft read or a final token).
"""

from __future__ import annotations

import heapq
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.config import RunConfig, validate
from sim.cost import ConstantCost
from sim.engine import Engine
from sim.errors import ConfigError, TraceError
from sim.memory import KVMemory
from sim.schedulers.depthwise_spec import DepthwiseSpecConfig, DepthwiseSpecScheduler
from sim.simulation import simulate
from sim.step import CostedSteps
from sim.trace import load_trace, trace_from_frame, write_trace
from tests.sim.helpers import analytic_config, looped_model, trace_frame
from tests.sim.test_invariants import check_emissions


# -- the reference --------------------------------------------------------------------
def request_steps(c: list[bool], n: int, d: int) -> dict:
    """One request on its own, in steps relative to its first (1-based)."""
    L = len(c)
    start, heads, discarded, discarded_loops = 1, set(), 0, 0
    for p in range(L):
        heads.add(start + n - 1)  # the final token
        if p == L - 1:
            break
        heads.add(start + d - 1)  # the draft of p
        if not c[p]:
            j = 1
            while j * d <= n - 1 and p + j <= L - 1:
                discarded += 1
                discarded_loops += n - j * d
                if (j + 1) * d <= n and p + j < L - 1:
                    heads.add(start + (j + 1) * d - 1)
                j += 1
        start += d if c[p] else n
    hold = n + sum(d if ok else n for ok in c[:-1])
    assert start + n - 1 == hold
    return {"hold": hold, "heads": heads, "discarded": discarded, "discarded_loops": discarded_loops}


def reference(accepts: list[list[bool]], n: int, d: int, batch: int, step_s: float = 1e-3,
              prefill_s: float = 0.0, head_s: float = 0.0) -> dict:
    reqs = [request_steps(c, n, d) for c in accepts]
    free = [0] * batch  # step after which each slot is free
    heapq.heapify(free)
    starts = []
    for r in reqs:
        t = heapq.heappop(free)
        starts.append(t + 1)
        heapq.heappush(free, t + r["hold"])
    steps = max(s + r["hold"] - 1 for s, r in zip(starts, reqs))
    admitted = [0] * (steps + 1)
    heads = [False] * (steps + 1)
    for s, r in zip(starts, reqs):
        admitted[s] += 1
        for h in r["heads"]:
            heads[s + h - 1] = True
    makespan = sum(step_s + prefill_s * admitted[k] + (head_s if heads[k] else 0.0) for k in range(1, steps + 1))
    tokens = sum(map(len, accepts))
    discarded = sum(r["discarded"] for r in reqs)
    discarded_loops = sum(r["discarded_loops"] for r in reqs)
    verified = sum(len(c) - 1 for c in accepts)
    return {"makespan_s": makespan, "loop_steps": steps, "rows_discarded": discarded,
            "rows_run": tokens + discarded, "row_loops": n * tokens + discarded_loops,
            "verified_drafts": verified, "accepted_drafts": sum(sum(c[:-1]) for c in accepts),
            "finish_steps": [s + r["hold"] - 1 for s, r in zip(starts, reqs)]}


# -- traces and configs ---------------------------------------------------------------
def spec_trace(correct: list[list[list[bool]]], n: int, prompt_lens: list[int] | None = None):
    """correct[r][p][k-1]: loop k's prediction of request r's position p is the final one
    (the last loop always is). exit_loop: the first loop from which every later loop is right."""
    exits = []
    for req in correct:
        exits.append([next(k for k in range(1, n + 1) if all(row[k - 1:n - 1])) for row in req])
    frame = trace_frame(exits, prompt_lens)
    flat = [row for req in correct for row in req]
    for k in range(1, n + 1):
        frame[f"correct_{k}"] = [True if k == n else bool(row[k - 1]) for row in flat]
    return trace_from_frame(frame, "<depthwise_spec>", n)


def monotone(accepts: list[list[bool]], n: int, d: int) -> list[list[list[bool]]]:
    """correct_k per position, with correct_d = accepts and the other loops consistent with it."""
    return [[[ok if k < d else (ok or k == n) if k == d else True for k in range(1, n + 1)] for ok in req]
            for req in accepts]


def spec_config(batch: int, n: int, d: int, step_s: float = 1e-3, prefill_s: float = 0.0,
                head_s: float = 0.0) -> RunConfig:
    cfg = analytic_config("depthwise_spec", batch, n, step_s, exit_policy="none")
    cfg.scheduler.draft_loops = d
    cfg.cost.prefill_s, cfg.cost.head_s = prefill_s, head_s
    return validate(cfg)


def run(accepts, n, d, batch, **cost):
    return simulate(spec_config(batch, n, d, **cost), trace=spec_trace(monotone(accepts, n, d), n), log_emits=True)


def check_against_reference(res, accepts, n, d, batch, **cost):
    ref = reference(accepts, n, d, batch, **cost)
    m = res.metrics
    assert m["makespan_s"] == pytest.approx(ref["makespan_s"], rel=1e-12)
    for key in ("loop_steps", "rows_discarded", "rows_run", "row_loops", "verified_drafts", "accepted_drafts"):
        assert m[key] == ref[key], key
    assert m["mean_rows_per_step"] == pytest.approx(ref["row_loops"] / ref["loop_steps"])
    if ref["verified_drafts"]:
        assert m["acceptance_rate"] == pytest.approx(ref["accepted_drafts"] / ref["verified_drafts"])
    assert m["exit_policy"] == "none" and m["accuracy_cost"] == 0.0
    check_emissions(res, accepts)
    return ref


# -- closed forms ---------------------------------------------------------------------
ACCEPTS = [[True, True, False, True, True, True, False, True], [False, True], [True] * 9, [False],
           [True, False, False, True, False, True]]


@pytest.mark.parametrize("n,d", [(2, 1), (3, 1), (3, 2), (4, 1), (4, 3)])
def test_batch_one_closed_form(n, d):
    """Batch 1: the requests one after another, each N + sum(d if correct_d else N) steps."""
    res = run(ACCEPTS, n, d, 1)
    hold = sum(n + sum(d if ok else n for ok in c[:-1]) for c in ACCEPTS)
    assert res.metrics["makespan_s"] == pytest.approx(hold * 1e-3)
    check_against_reference(res, ACCEPTS, n, d, 1)


@pytest.mark.parametrize("n,d", [(2, 1), (3, 1), (3, 2)])
@pytest.mark.parametrize("batch", [2, 3, 8])
def test_batch_b_closed_form(n, d, batch):
    ref = check_against_reference(run(ACCEPTS, n, d, batch), ACCEPTS, n, d, batch)
    finish = run(ACCEPTS, n, d, batch).requests.finish_s.to_numpy()
    assert finish == pytest.approx(np.array(ref["finish_steps"]) * 1e-3)


@pytest.mark.parametrize("n,d", [(2, 1), (3, 1), (3, 2), (4, 2)])
def test_all_drafts_accepted(n, d):
    """N - d + d*L steps per request, one row started every d steps, nothing discarded."""
    lengths = [1, 5, 12]
    accepts = [[True] * L for L in lengths]
    m = run(accepts, n, d, 1).metrics
    assert m["makespan_s"] == pytest.approx(sum(n - d + d * L for L in lengths) * 1e-3)
    assert m["rows_discarded"] == 0 and m["rows_run"] == sum(lengths) and m["acceptance_rate"] == 1.0


@pytest.mark.parametrize("n,d", [(2, 1), (3, 1), (3, 2)])
@pytest.mark.parametrize("batch", [1, 2, 4])
def test_no_draft_accepted_is_continuous(n, d, batch):
    accepts = [[False] * L for L in (6, 3, 1, 4, 2)]
    spec = run(accepts, n, d, batch).metrics
    cfg = analytic_config("continuous", batch, n, exit_policy="none")
    cont = simulate(cfg, trace=spec_trace(monotone(accepts, n, d), n)).metrics
    assert spec["makespan_s"] == pytest.approx(cont["makespan_s"], rel=1e-12)
    assert spec["accepted_drafts"] == 0 and spec["acceptance_rate"] == 0.0
    assert spec["rows_discarded"] == sum(sum(1 for j in range(1, n) if j * d <= n - 1 and j <= L - 1 - p)
                                         for L in (6, 3, 1, 4, 2) for p in range(L - 1))


@pytest.mark.parametrize("d,expect_right", [(1, True), (2, False)])
def test_loop_one_right_while_loop_two_wrong(d, expect_right):
    """Acceptance reads correct_d of the draft loop alone: with correct_1 true and correct_2
    false (loop 2 drifts off the final token and loop 3 comes back), d=1 accepts every draft
    and d=2 none."""
    n, lengths = 3, [7, 4]
    correct = [[[True, False, True]] * L for L in lengths]
    res = simulate(spec_config(2, n, d), trace=spec_trace(correct, n), log_emits=True)
    accepts = [[expect_right] * L for L in lengths]
    check_against_reference(res, accepts, n, d, 2)
    assert res.metrics["acceptance_rate"] == (1.0 if expect_right else 0.0)


@pytest.mark.parametrize("n,d", [(2, 1), (3, 1), (3, 2), (4, 2)])
def test_random_non_monotone_traces(n, d):
    rng = np.random.default_rng(10 * n + d)
    correct = [[list(rng.random(n) < 0.6) for _ in range(int(rng.integers(1, 15)))] for _ in range(9)]
    res = simulate(spec_config(3, n, d), trace=spec_trace(correct, n), log_emits=True)
    check_against_reference(res, [[row[d - 1] for row in req] for req in correct], n, d, 3)


def test_prefill_and_head_costs_under_constant_cost():
    """cost=constant charges prefill_s per request prefilled before a step and head_s per step
    that runs any exit path (a draft read or a final token)."""
    res = run(ACCEPTS, 3, 1, 2, step_s=1e-3, prefill_s=0.25, head_s=0.125)
    check_against_reference(res, ACCEPTS, 3, 1, 2, step_s=1e-3, prefill_s=0.25, head_s=0.125)
    base = run(ACCEPTS, 3, 1, 2).metrics["makespan_s"]
    assert res.metrics["makespan_s"] > base + 0.25 * len(ACCEPTS)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 4), st.data(), st.integers(1, 6), st.floats(1e-4, 1.0), st.sampled_from((0.0, 0.5)),
       st.sampled_from((0.0, 0.25)))
def test_constant_cost_matches_reference_property(n, data, batch, step_s, prefill_s, head_s):
    d = data.draw(st.integers(1, n - 1))
    correct = data.draw(st.lists(st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=1,
                                          max_size=12), min_size=1, max_size=10))
    res = simulate(spec_config(batch, n, d, step_s, prefill_s, head_s), trace=spec_trace(correct, n),
                   log_emits=True)
    accepts = [[row[d - 1] for row in req] for req in correct]
    ref = reference(accepts, n, d, batch, step_s, prefill_s, head_s)
    assert res.metrics["makespan_s"] == pytest.approx(ref["makespan_s"], rel=1e-9)
    assert res.metrics["rows_discarded"] == ref["rows_discarded"] and res.metrics["row_loops"] == ref["row_loops"]
    check_emissions(res, accepts)


# -- the rows, step by step -------------------------------------------------------------
class Batches(CostedSteps):
    needs_batch = True

    def __init__(self, cost):
        super().__init__(cost)
        self.batches, self.loads = [], []

    def step_seconds(self, load, batch):
        self.batches.append(batch)
        self.loads.append(load)
        return super().step_seconds(load, batch)


def run_batches(correct, n, d, batch, prompts=None):
    from sim.workload import build_workload

    cfg = spec_config(batch, n, d)
    trace = spec_trace(correct, n, prompts)
    exits, wrong = DepthwiseSpecScheduler.token_exits(trace, cfg.exit, cfg.scheduler, n)
    wl = build_workload(trace, exits, wrong, n, cfg.workload, 0)
    state = DepthwiseSpecScheduler.make_state(cfg.scheduler, wl, batch, KVMemory(cfg.model, cfg.hardware, cfg.memory,
                                                                                 "ignore"), "ignore", 10,
                                              checks_every_loop=False)
    clock = Batches(ConstantCost(cfg.cost))
    Engine(state, DepthwiseSpecScheduler(state, cfg.scheduler), clock).run()
    return clock, wl


@pytest.mark.parametrize("n,d", [(2, 1), (3, 1), (3, 2), (4, 1)])
def test_step_batches_keep_the_contract(n, d):
    """Each batch: rows of one request at consecutive positions, never past its last, the
    earlier position at the deeper loop (so it ran each loop first); drafting rows at loop
    d, leaving rows at loop N; an admitted request's first row in the same step; and the
    load prices exactly those rows (heads for drafts and finals, distinct loops)."""
    rng = np.random.default_rng(n * 7 + d)
    correct = [[list(rng.random(n) < 0.5) for _ in range(int(rng.integers(1, 10)))] for _ in range(6)]
    prompts = [int(x) for x in rng.integers(1, 30, size=6)]
    clock, wl = run_batches(correct, n, d, 2, prompts)
    for b, load in zip(clock.batches, clock.loads):
        assert b.drafting.dtype == bool and b.drafting.size == b.slots.size
        assert not (b.drafting & b.leaving).any()
        assert (b.loops[b.drafting] == d).all() and (b.loops[b.leaving] == n).all()
        for s in np.unique(b.slots):
            rows = b.slots == s
            r = np.unique(b.requests[rows])
            assert r.size == 1
            pos, loops = b.positions[rows], b.loops[rows]
            assert (np.diff(pos) == 1).all() and (np.diff(loops) < 0).all()  # so no KV read is shared
            assert pos.max() < wl.gen_len[r[0]]
            assert rows.sum() <= -(-n // d)
        for r in b.admitted:
            assert (b.requests == r).any() and set(b.positions[b.requests == r]) == {0}
        assert load.tokens == b.slots.size and load.distinct_loops == np.unique(b.loops).size
        assert load.heads == load.exiting == int((b.drafting | b.leaving).sum())
        assert load.entering == int((b.loops == 1).sum())
        assert load.context == int((wl.prompt_len[b.requests] + b.positions + 1).sum())


def test_rows_in_one_step_at_different_loops():
    """N=3, d=1, one request of 3 tokens whose drafts all hold: step 3 carries positions 0, 1
    and 2 at loops 3, 2 and 1; position 0 leaves, 1 is at loop 2, position 2 reads no draft."""
    clock, _ = run_batches([[[True, True, True]] * 3], 3, 1, 1)
    got = [(b.positions.tolist(), b.loops.tolist(), b.leaving.tolist(), b.drafting.tolist()) for b in clock.batches]
    assert got == [
        ([0], [1], [False], [True]),
        ([0, 1], [2, 1], [False, False], [False, True]),
        ([0, 1, 2], [3, 2, 1], [True, False, False], [False, False, False]),
        ([1, 2], [3, 2], [True, False], [False, False]),
        ([2], [3], [True], [False]),
    ]


def test_a_rejection_discards_the_rows_behind_it():
    """N=3, d=1, position 0's draft wrong: rows 1 and 2 (started on it) are discarded after
    step 3, and position 1 enters loop 1 again in step 4 with the verified token."""
    correct = [[[False, True, True], [True, True, True], [True, True, True]]]
    clock, _ = run_batches(correct, 3, 1, 1)
    got = [(b.positions.tolist(), b.loops.tolist()) for b in clock.batches]
    assert got == [([0], [1]), ([0, 1], [2, 1]), ([0, 1, 2], [3, 2, 1]),  # rows 1, 2 discarded after step 3
                   ([1], [1]), ([1, 2], [2, 1]), ([1, 2], [3, 2]), ([2], [3])]  # N + N + d = 7 steps


# -- invariants -----------------------------------------------------------------------
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 4), st.data(), st.integers(1, 6), st.booleans(), st.integers(0, 3),
       st.sampled_from(("ignore", "share")), st.integers(0, 2**16))
def test_invariants_hold(n, data, batch, online, fit, kv_policy, seed):
    """Online arrivals, memory that binds, any exit config: every token emitted once and in
    order, KV within capacity, and the run's own row conservation checks pass."""
    d = data.draw(st.integers(1, n - 1))
    accepts = data.draw(st.lists(st.lists(st.booleans(), min_size=1, max_size=10), min_size=1, max_size=10))
    prompts = data.draw(st.lists(st.integers(0, 40), min_size=len(accepts), max_size=len(accepts)))
    cfg = RunConfig()
    cfg.progress, cfg.seed = False, seed
    cfg.scheduler.name, cfg.scheduler.batch_size = "depthwise_spec", batch
    cfg.scheduler.draft_loops = d
    cfg.exit.policy = data.draw(st.sampled_from(("oracle", "confidence", "none")))  # ignored
    cfg.exit.kv_policy = kv_policy
    cfg.model = looped_model(n)
    if online:
        cfg.workload.arrival, cfg.workload.rate = "poisson", 2000.0
    if fit:
        probe = KVMemory(cfg.model, cfg.hardware, cfg.memory, kv_policy)
        biggest = max(p + len(a) for p, a in zip(prompts, accepts)) * probe.per_token
        cfg.hardware.memory_gb = (probe.weights + fit * biggest) / cfg.memory.utilization / 1e9
    validate(cfg)
    res = simulate(cfg, trace=spec_trace(monotone(accepts, n, d), n, prompts), log_emits=True)
    m = res.metrics
    check_emissions(res, accepts)
    assert m["exit_policy"] == "none" and m["num_tokens"] == sum(map(len, accepts))
    assert m["accepted_drafts"] == sum(sum(a[:-1]) for a in accepts)
    assert 1 <= m["effective_batch"] <= batch and 0 < m["slot_utilization"] <= 1
    assert 1 <= m["mean_rows_per_step"] <= batch * -(-n // d)
    if fit:
        assert m["peak_kv_bytes"] <= m["kv_capacity_bytes"]


def test_bundled_traces_against_the_reference():
    """The real 2- and 3-loop traces (their own correct_d, loop 1 right where loop 2 is wrong
    included), a few dozen requests each, at batch 4."""
    for path, n in (("traces/data/smollm2_r2_mc_r64_coda.parquet", 2), ("traces/data/smollm2_r3_mc_r64.parquet", 3)):
        full = load_trace(path)
        keep = 24
        end = int(full.offsets[keep])
        frame = pd.DataFrame({"request_id": np.repeat(np.arange(keep), full.gen_len[:keep]),
                              "position": np.concatenate([np.arange(g) for g in full.gen_len[:keep]]),
                              "prompt_len": np.repeat(full.prompt_len[:keep], full.gen_len[:keep]),
                              "exit_loop": full.exit_loop[:end]})
        for k in range(n):
            frame[f"correct_{k + 1}"] = full.correct[:end, k]
        trace = trace_from_frame(frame, path, n)
        if n == 3:
            assert (trace.correct[:, 0] & ~trace.correct[:, 1]).any()  # loop 1 right, loop 2 wrong
        for d in range(1, n):
            cfg = analytic_config("depthwise_spec", 4, n, exit_policy="none")
            cfg.scheduler.draft_loops = d
            res = simulate(validate(cfg), trace=trace, log_emits=True)
            offsets = trace.offsets
            accepts = [list(trace.correct[offsets[r]:offsets[r + 1], d - 1]) for r in range(keep)]
            check_against_reference(res, accepts, n, d, 4)


# -- bad input ------------------------------------------------------------------------
@pytest.mark.parametrize("d", [2, 3])
def test_draft_as_deep_as_the_model_is_refused(d):
    cfg = spec_config(1, 2, 1)
    cfg.scheduler.draft_loops = d
    validate(cfg)  # the scheduler's own keys are fine on their own: d < N needs the model
    with pytest.raises(ConfigError, match=f"scheduler.draft_loops={d} must be in 1..model.loops-1"):
        simulate(cfg, trace=spec_trace(monotone([[True]], 2, 1), 2))


@pytest.mark.parametrize("key,value,message", [("draft_loops", 0, "must be >= 1"),
                                               ("accept", "oracle", "must be one of trace, live")])
def test_bad_keys_are_refused(key, value, message):
    cfg = analytic_config("depthwise_spec", 1, 2, exit_policy="none")
    setattr(cfg.scheduler, key, value)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_trace_without_correct_is_refused():
    trace = trace_from_frame(trace_frame([[1, 2]]), "<no-correct>", 2)
    with pytest.raises(TraceError, match="needs column correct_1"):
        simulate(spec_config(1, 2, 1), trace=trace)


def test_live_acceptance_needs_the_real_backend():
    cfg = spec_config(1, 2, 1)
    cfg.scheduler.accept = "live"
    with pytest.raises(ConfigError, match="scheduler.accept=live is verified by the real model"):
        simulate(cfg, trace=trace_from_frame(trace_frame([[1, 2]]), "<plain>", 2))


class AcceptsAll(CostedSteps):
    """A clock that decides acceptance itself: every draft holds whatever the trace says."""

    needs_batch = True
    decides_acceptance = True

    def step_seconds(self, load, batch):
        self.accepted = np.ones(batch.slots.size, dtype=bool)
        return super().step_seconds(load, batch)


def test_live_acceptance_follows_the_clock():
    """accept=live takes the clock's verdict, not the trace's (which lacks correct_d here):
    every draft accepted gives N - d + d*L steps per request."""
    cfg = spec_config(1, 3, 1)
    cfg.scheduler.accept = "live"
    res = simulate(cfg, trace=trace_from_frame(trace_frame([[1, 2, 3, 3], [2, 2]]), "<plain>", 3),
                   clock=AcceptsAll(ConstantCost(cfg.cost)))
    assert res.metrics["makespan_s"] == pytest.approx((3 - 1 + 4 + 3 - 1 + 2) * 1e-3)
    assert res.metrics["acceptance_rate"] == 1.0 and res.metrics["accept"] == "live"


def test_registered_with_its_typed_config():
    from sim.registry import scheduler_registry

    entry = scheduler_registry.get("depthwise_spec")
    assert entry.impl is DepthwiseSpecScheduler and entry.config is DepthwiseSpecConfig
    assert analytic_config("depthwise_spec", 1, 2).scheduler == DepthwiseSpecConfig(batch_size=1)


# -- the CLI --------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_on_the_bundled_trace_matches_the_reference(tmp_path):
    """`python -m sim.run scheduler=depthwise_spec` composed by Hydra on the bundled default
    trace (2 loops, its model from the metadata), against the reference from its correct_1;
    and bad input ends in one line, exit 2, nothing written."""
    from tests.sim.test_cli import run_cli

    proc = run_cli("scheduler=depthwise_spec", "scheduler.batch_size=16", "cost=constant", "cost.loop_step_s=0.001",
                   "memory.limit=false", "progress=false", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    trace = load_trace()
    off = trace.offsets
    accepts = [list(trace.correct[off[r]:off[r + 1], 0]) for r in range(trace.num_requests)]
    ref = reference(accepts, 2, 1, 16)
    assert m["scheduler"] == "depthwise_spec" and m["draft_loops"] == 1 and m["accept"] == "trace"
    assert m["makespan_s"] == pytest.approx(ref["makespan_s"], rel=1e-12)
    assert m["rows_discarded"] == ref["rows_discarded"] and m["loop_steps"] == ref["loop_steps"]
    assert "acceptance rate" in proc.stdout and "rows discarded" in proc.stdout

    out = tmp_path / "bad"
    proc = run_cli("scheduler=depthwise_spec", "scheduler.draft_loops=2", "progress=false", f"hydra.run.dir={out}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "scheduler.draft_loops=2" in lines[0]
    assert not out.exists()
    plain = tmp_path / "plain.parquet"
    write_trace(trace_frame([[1, 2, 2], [2]]), plain, 2, {})
    proc = run_cli("scheduler=depthwise_spec", f"trace.path={plain}", "progress=false", f"hydra.run.dir={out}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "correct_1" in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()
