"""scheduler=speculative against closed forms written from the issue's semantics, with plain
Python and no simulator code: a round at position p drafts k = min(K, left) tokens, accepts the
longest prefix with correct_d true (a), emits a + 1 (a < k) or k; an iteration is one round of
every resident request and lasts K*d + (N-d) loop steps; requests join at iteration ends."""

from __future__ import annotations

import heapq

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.config import RunConfig, validate
from sim.cost import ConstantCost, RooflineCost, RooflineCostConfig
from sim.engine import Engine
from sim.errors import ConfigError, TraceError
from sim.memory import KVMemory
from sim.schedulers.speculative import SpeculativeConfig, SpeculativeScheduler
from sim.simulation import simulate
from sim.trace import trace_from_frame
from tests.sim.helpers import analytic_config, looped_model, trace_frame
from tests.sim.test_invariants import check_emissions


def spec_trace(accepts: list[list[bool]], num_loops: int, d: int = 1, prompt_lens: list[int] | None = None):
    """A trace whose correct_d column is `accepts`; the other loops are consistent with it
    (correct from loop d on where the draft is right, from the last loop otherwise)."""
    exits = [[d if ok else num_loops for ok in req] for req in accepts]
    frame = trace_frame(exits, prompt_lens)
    for k in range(1, num_loops + 1):
        frame[f"correct_{k}"] = frame.exit_loop <= k
    return trace_from_frame(frame, "<spec>", num_loops)


def rounds_of(accepts: list[bool], K: int) -> list[int]:
    """Tokens emitted by each round of one request."""
    p, out = 0, []
    while p < len(accepts):
        k = min(K, len(accepts) - p)
        a = 0
        while a < k and accepts[p + a]:
            a += 1
        emitted = a + 1 if a < k else k
        out.append(emitted)
        p += emitted
    return out


def list_schedule(durations: list[int], slots: int) -> int:
    free = [0] * slots
    end = 0
    for dur in durations:
        t = heapq.heappop(free)
        heapq.heappush(free, t + dur)
        end = max(end, t + dur)
    return end


def reference_steps(accepts: list[list[bool]], K: int, d: int, n_loops: int, batch: int) -> int:
    return list_schedule([len(rounds_of(r, K)) for r in accepts], batch) * (K * d + n_loops - d)


def spec_config(batch: int, n_loops: int, K: int, d: int = 1, step: float = 1e-3) -> RunConfig:
    cfg = analytic_config("speculative", batch, n_loops, step, exit_policy="none")
    cfg.scheduler.draft_len, cfg.scheduler.draft_loops = K, d
    return validate(cfg)


def random_accepts(rng: np.random.Generator, n_req: int, max_len: int, p: float) -> list[list[bool]]:
    return [list(rng.random(rng.integers(1, max_len + 1)) < p) for _ in range(n_req)]


@pytest.mark.parametrize("seed", range(10))
def test_makespan_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n_loops = int(rng.integers(2, 5))
    d = int(rng.integers(1, n_loops))
    K, batch = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    accepts = random_accepts(rng, int(rng.integers(1, 25)), 20, float(rng.random()))
    step = 0.0025
    res = simulate(spec_config(batch, n_loops, K, d, step), trace=spec_trace(accepts, n_loops, d))
    m = res.metrics
    assert m["makespan_s"] == pytest.approx(reference_steps(accepts, K, d, n_loops, batch) * step, rel=1e-12)
    rounds = [rounds_of(r, K) for r in accepts]
    assert m["rounds"] == sum(map(len, rounds))
    assert m["accepted_drafts"] == sum(map(sum, accepts))  # each right draft accepted once
    assert m["drafted_tokens"] == sum(min(K, len(r) - sum(e[:i]))
                                      for r, e in zip(accepts, rounds) for i in range(len(e)))
    assert m["acceptance_rate"] == pytest.approx(m["accepted_drafts"] / m["drafted_tokens"])
    assert m["mean_tokens_per_round"] == pytest.approx(sum(map(len, accepts)) / m["rounds"])
    assert m["draft_steps"] == m["iterations"] * K * d and m["verify_steps"] == m["iterations"] * (n_loops - d)
    assert m["loop_steps"] == m["draft_steps"] + m["verify_steps"]
    assert m["accuracy_cost"] == 0.0 and m["exit_policy"] == "none"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 4), st.data(), st.integers(1, 8), st.integers(1, 6), st.floats(1e-4, 1.0))
def test_constant_cost_matches_reference_property(n_loops, data, K, batch, step):
    d = data.draw(st.integers(1, n_loops - 1))
    accepts = data.draw(st.lists(st.lists(st.booleans(), min_size=1, max_size=14), min_size=1, max_size=12))
    res = simulate(spec_config(batch, n_loops, K, d, step), trace=spec_trace(accepts, n_loops, d))
    assert res.metrics["makespan_s"] == pytest.approx(reference_steps(accepts, K, d, n_loops, batch) * step,
                                                      rel=1e-9)


@pytest.mark.parametrize("K", [1, 3, 4, 8])
def test_batch_one_closed_form(K):
    """Batch 1: makespan = rounds x (K*d + N-d) loop steps, a shortened last round included."""
    n_loops, d = 3, 2
    accepts = [[True, True, False, True, True, True, False], [False, True], [True] * 9]
    res = simulate(spec_config(1, n_loops, K, d), trace=spec_trace(accepts, n_loops, d))
    rounds = sum(len(rounds_of(r, K)) for r in accepts)
    assert res.metrics["makespan_s"] == pytest.approx(rounds * (K * d + n_loops - d) * 1e-3)


@pytest.mark.parametrize("K", [1, 2, 5])
def test_no_draft_accepted_gives_one_token_per_round(K):
    accepts = [[False] * 6, [False] * 3]
    res = simulate(spec_config(2, 2, K), trace=spec_trace(accepts, 2)).metrics
    assert res["rounds"] == 9 and res["mean_tokens_per_round"] == 1.0
    assert res["accepted_drafts"] == 0 and res["acceptance_rate"] == 0.0
    assert res["makespan_s"] == pytest.approx(6 * (K + 1) * 1e-3)  # the longer request: 6 rounds


@pytest.mark.parametrize("K", [1, 2, 4, 7])
def test_all_accepted_gives_K_tokens_per_round(K):
    gen = 14
    res = simulate(spec_config(1, 2, K), trace=spec_trace([[True] * gen], 2)).metrics
    rounds = -(-gen // K)
    assert res["rounds"] == rounds and res["acceptance_rate"] == 1.0
    assert res["makespan_s"] == pytest.approx(rounds * (K + 1) * 1e-3)
    assert res["drafted_tokens"] == gen  # the last draft shortens to what is left


def test_request_shorter_than_draft_still_takes_a_whole_iteration():
    K, n_loops, d = 6, 3, 1
    res = simulate(spec_config(1, n_loops, K, d), trace=spec_trace([[True, True]], n_loops, d), log_emits=True)
    assert res.metrics["rounds"] == 1 and res.metrics["drafted_tokens"] == 2
    assert res.metrics["makespan_s"] == pytest.approx((K * d + n_loops - d) * 1e-3)
    (reqs, positions, t), = res.emit_log
    assert reqs.tolist() == [0, 0] and positions.tolist() == [0, 1] and t == pytest.approx(8e-3)
    # A rejected draft in a short request: two rounds, one token each.
    res = simulate(spec_config(1, n_loops, K, d), trace=spec_trace([[False, False]], n_loops, d))
    assert res.metrics["rounds"] == 2 and res.metrics["makespan_s"] == pytest.approx(2 * 8e-3)


def test_requests_join_at_iteration_boundaries_and_emit_per_round():
    """Batch 1, two requests: the second starts only when the first has finished, and a
    round's tokens are emitted together at the end of its iteration."""
    K, d, n = 2, 1, 2  # an iteration is 2 + 1 = 3 loop steps
    res = simulate(spec_config(1, n, K, d), trace=spec_trace([[True, False, True], [False]], n), log_emits=True)
    got = [(r.tolist(), p.tolist(), round(t, 9)) for r, p, t in res.emit_log]
    # request 0: round 1 accepts p0, rejects p1 -> emits p0, p1; round 2 drafts p2 only -> emits p2.
    assert got == [([0, 0], [0, 1], 0.003), ([0], [2], 0.006), ([1], [0], 0.009)]
    req = res.requests
    assert req.admitted_s.tolist() == pytest.approx([0.0, 0.006])
    assert req.first_token_s.tolist() == pytest.approx([0.003, 0.009])


class Recording(ConstantCost):
    """A constant cost that keeps every step's load."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.loads = []

    def step_time(self, load):
        self.loads.append(load)
        return super().step_time(load)


def run_loads(accepts, n_loops, K, d, batch, prompt_lens, want_batch=False):
    from sim.step import CostedSteps
    from sim.workload import build_workload

    cfg = spec_config(batch, n_loops, K, d)
    trace = spec_trace(accepts, n_loops, d, prompt_lens)
    exits, wrong = SpeculativeScheduler.token_exits(trace, cfg.exit, cfg.scheduler, n_loops)
    wl = build_workload(trace, exits, wrong, n_loops, cfg.workload, 0)
    memory = KVMemory(cfg.model, cfg.hardware, cfg.memory, "ignore")
    state = SpeculativeScheduler.make_state(cfg.scheduler, wl, batch, memory, "ignore", 10, checks_every_loop=False)
    cost = Recording(cfg.cost)
    batches = []

    class Clock(CostedSteps):
        needs_batch = want_batch

        def step_seconds(self, load, b):
            batches.append(b)
            return super().step_seconds(load, b)

    Engine(state, SpeculativeScheduler(state, cfg.scheduler), Clock(cost)).run()
    return cost.loads, batches


def test_step_loads_of_draft_and_verify_steps():
    """Two requests (prompts 10 and 20), N=3, d=2, K=2: draft steps carry one token per
    drafting request through loops 1..2 (prelude at loop 1, coda and head at loop 2), the
    verify step k tokens per request at loop 3 with causal contexts, coda and heads."""
    accepts = [[True, False, True], [False]]
    loads, _ = run_loads(accepts, 3, 2, 2, 2, [10, 20])
    shape = [(ld.tokens, ld.context, ld.entering, ld.entering_context, ld.exiting, ld.exiting_context, ld.heads,
              ld.distinct_loops, len(ld.prefill), ld.kv_shared) for ld in loads]
    # Iteration 1: request 0 drafts p0, p1 (k=2, contexts 11, 12); request 1 drafts p0 only (k=1, context 21).
    # Draft 0: loop 1 then loop 2, both requests; draft 1: request 0 only; verify: 2 + 1 tokens at loop 3.
    # Request 0 accepts p0, emits p0 and the correction at p1; request 1 emits its one token and leaves.
    # Iteration 2: request 0 alone drafts p2 (k=1, context 13); draft 1 is an empty step.
    # In the verify step request 0's two queries read its KV once: 11 of their 23 positions are shared.
    assert shape == [
        (2, 32, 2, 32, 0, 0, 0, 1, 2, 0),
        (2, 32, 0, 0, 2, 32, 2, 1, 0, 0),
        (1, 12, 1, 12, 0, 0, 0, 1, 0, 0),
        (1, 12, 0, 0, 1, 12, 1, 1, 0, 0),
        (3, 11 + 12 + 21, 0, 0, 3, 44, 3, 1, 0, 11),
        (1, 13, 1, 13, 0, 0, 0, 1, 0, 0),
        (1, 13, 0, 0, 1, 13, 1, 1, 0, 0),
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        (1, 13, 0, 0, 1, 13, 1, 1, 0, 0),
    ]


def test_step_batches_list_every_token_of_a_verify_step():
    _, batches = run_loads([[True, False, True], [False]], 3, 2, 2, 2, [10, 20], want_batch=True)
    verify = batches[4]
    assert verify.slots.tolist() == [0, 0, 1] and verify.requests.tolist() == [0, 0, 1]
    assert verify.positions.tolist() == [0, 1, 0] and verify.loops.tolist() == [3, 3, 3]
    assert verify.leaving.all() and batches[0].admitted.tolist() == [0, 1]
    assert batches[0].positions.tolist() == [0, 0] and batches[2].positions.tolist() == [1]
    assert batches[7].slots.size == 0


def test_roofline_prices_a_verify_step_like_k_tokens_at_once():
    """Under the roofline a verify step of K tokens costs far less than K draft-sized steps
    (the block's weights are read once)."""
    cfg = spec_config(1, 2, 4)
    cost = RooflineCost(RooflineCostConfig(), cfg.hardware, cfg.model)
    loads, _ = run_loads([[True] * 4], 2, 4, 1, 1, [16])
    times = [cost.step_time(ld) for ld in loads]
    assert len(times) == 5 and times[4] < 1.5 * times[1]


@pytest.mark.parametrize("flops_efficiency,same", [(0.5, True), (1e-6, False)])
def test_roofline_reads_a_requests_kv_once_per_verify_step(flops_efficiency, same):
    """A verify step's k queries over one sequence read its KV once (bytes as if only the
    last query attended), but each query's attention is computed (FLOPs over every context).
    With a middle-cycle layout, so the coda's KV reads count too."""
    from dataclasses import replace

    cfg = spec_config(1, 2, 4)
    cfg.model = RunConfig().model  # smollm2_135m_r2_mc: prelude and coda layers
    cost = RooflineCost(RooflineCostConfig(flops_efficiency=flops_efficiency), cfg.hardware, cfg.model)
    loads, _ = run_loads([[True] * 4], 2, 4, 1, 1, [3000])
    verify = loads[4]
    assert verify.tokens == 4 and verify.kv_shared == 3 * 3001 + 3 and verify.exiting == 4
    unique = 3001 + 3
    once = replace(verify, context=unique, exiting_context=unique, kv_shared=0)
    assert (cost.decode_time(verify) == cost.decode_time(once)) == same
    if same:  # bandwidth-bound: pricing every query's re-read would cost more
        assert cost.decode_time(verify) < cost.decode_time(replace(verify, kv_shared=0))


def test_trace_without_correct_is_refused():
    frame = trace_frame([[1, 2]])
    trace = trace_from_frame(frame, "<no-correct>", 2)
    with pytest.raises(TraceError, match="correct_1"):
        simulate(spec_config(1, 2, 4), trace=trace)


def test_trace_loops_must_match_model():
    with pytest.raises(ConfigError, match="num_loops=3"):
        simulate(spec_config(1, 2, 4), trace=spec_trace([[True]], 3))


@pytest.mark.parametrize("key,value", [("draft_len", 0), ("draft_loops", 0)])
def test_bad_draft_config_is_refused(key, value):
    cfg = analytic_config("speculative", 1, 2, exit_policy="none")
    setattr(cfg.scheduler, key, value)
    with pytest.raises(ConfigError, match=f"scheduler.{key}={value} must be >= 1"):
        validate(cfg)


@pytest.mark.parametrize("d", [2, 3])
def test_draft_as_deep_as_the_model_is_refused(d):
    """d < N is checked once the model is known: the draft must run fewer loops than it."""
    cfg = analytic_config("speculative", 1, 2, exit_policy="none")
    cfg.scheduler.draft_loops = d
    validate(cfg)  # the scheduler's own keys are fine on their own
    with pytest.raises(ConfigError, match=f"scheduler.draft_loops={d} must be in 1..model.loops-1"):
        simulate(cfg, trace=spec_trace([[True]], 2))


def test_registered_with_its_typed_config():
    from sim.registry import scheduler_registry

    entry = scheduler_registry.get("speculative")
    assert entry.impl is SpeculativeScheduler and entry.config is SpeculativeConfig
    assert analytic_config("speculative", 1, 2).scheduler == SpeculativeConfig(batch_size=1)
    with pytest.raises(ConfigError, match="scheduler.draft_len is not a key of scheduler=depthwise"):
        cfg = analytic_config("depthwise", 1, 2)
        cfg.scheduler.draft_len = 4
        validate(cfg)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 4), st.data(), st.integers(1, 6), st.integers(1, 6), st.booleans(), st.integers(0, 3),
       st.sampled_from(("ignore", "share")), st.integers(0, 2**16))
def test_invariants_hold(n_loops, data, K, batch, online, fit, kv_policy, seed):
    """Online arrivals, memory that binds, any exit config: every token emitted once and in
    order, KV within capacity, the run's own conservation checks pass."""
    d = data.draw(st.integers(1, n_loops - 1))
    accepts = data.draw(st.lists(st.lists(st.booleans(), min_size=1, max_size=10), min_size=1, max_size=10))
    prompts = data.draw(st.lists(st.integers(0, 40), min_size=len(accepts), max_size=len(accepts)))
    cfg = RunConfig()
    cfg.progress, cfg.seed = False, seed
    cfg.scheduler.name, cfg.scheduler.batch_size = "speculative", batch
    cfg.scheduler.draft_len, cfg.scheduler.draft_loops = K, d
    cfg.exit.policy = data.draw(st.sampled_from(("oracle", "confidence", "none")))  # ignored
    cfg.exit.kv_policy = kv_policy
    cfg.model = looped_model(n_loops)
    if online:
        cfg.workload.arrival, cfg.workload.rate = "poisson", 2000.0
    if fit:
        probe = KVMemory(cfg.model, cfg.hardware, cfg.memory, kv_policy)
        biggest = max(p + len(a) for p, a in zip(prompts, accepts)) * probe.per_token
        cfg.hardware.memory_gb = (probe.weights + fit * biggest) / cfg.memory.utilization / 1e9
    validate(cfg)
    res = simulate(cfg, trace=spec_trace(accepts, n_loops, d, prompts), log_emits=True)
    m = res.metrics
    check_emissions(res, accepts)
    assert m["num_tokens"] == sum(map(len, accepts)) and m["accepted_drafts"] == sum(map(sum, accepts))
    assert 1 <= m["effective_batch"] <= batch and 0 < m["slot_utilization"] <= 1
    assert 1 <= m["mean_tokens_per_round"] <= K
    if fit:
        assert m["peak_kv_bytes"] <= m["kv_capacity_bytes"]


@pytest.fixture(scope="module")
def cli_trace(tmp_path_factory):
    """A 2-loop trace (the default model's loop count) carrying correct_k, and its correct_1."""
    from sim.trace import write_trace

    accepts = [[True, True, False, True, True, True, True, False], [False, True, True], [True] * 11,
               [False], [True, False, False, True, True]]
    frame = trace_frame([[1 if ok else 2 for ok in req] for req in accepts])
    for k in (1, 2):
        frame[f"correct_{k}"] = frame.exit_loop <= k
    path = tmp_path_factory.mktemp("spec") / "t.parquet"
    write_trace(frame, path, 2, {"model": "test"})
    return path, accepts


@pytest.mark.parametrize("batch", [pytest.param(1, marks=pytest.mark.slow), 2,
                                   pytest.param(8, marks=pytest.mark.slow)])
def test_cli_done_when_command_matches_closed_form(cli_trace, tmp_path, batch):
    """The issue's command verbatim (default model, 2 loops), plus a run dir and no progress bar."""
    import json

    from tests.sim.test_cli import run_cli

    path, accepts = cli_trace
    proc = run_cli("scheduler=speculative", "scheduler.draft_len=4", f"trace.path={path}", "cost=constant",
                   "cost.loop_step_s=0.001", "memory.limit=false", f"scheduler.batch_size={batch}",
                   "progress=false", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["makespan_s"] == pytest.approx(reference_steps(accepts, 4, 1, 2, batch) * 1e-3, rel=1e-12)
    assert m["draft_len"] == 4 and m["draft_loops"] == 1 and m["rounds"] == sum(len(rounds_of(r, 4)) for r in accepts)
    assert "acceptance rate" in proc.stdout


@pytest.mark.slow  # a subprocess or many simulations: seconds
def test_cli_refuses_trace_without_correct(tmp_path):
    from sim.trace import write_trace
    from tests.sim.test_cli import run_cli

    path = tmp_path / "plain.parquet"
    write_trace(trace_frame([[1, 2, 2], [2]]), path, 2, {})
    out = tmp_path / "run"
    proc = run_cli("scheduler=speculative", "scheduler.draft_loops=1", f"trace.path={path}", "progress=false",
                   f"hydra.run.dir={out}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "correct_1" in lines[0] and str(path) in lines[0]
    assert not out.exists()
