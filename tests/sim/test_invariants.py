"""Property-based checks over random traces, batch sizes, schedulers and policies."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.config import RunConfig
from sim.memory import KVMemory
from sim.simulation import simulate
from sim.trace import trace_from_frame
from sim.validate import validate
from tests.sim.helpers import analytic_config, looped_model, make_trace, trace_frame
from tests.sim.reference import REFERENCE

SCHEDULERS = tuple(REFERENCE)  # the four with an independent reference


@st.composite
def traces(draw, max_requests=10, max_len=8):
    n_loops = draw(st.integers(1, 4))
    exits = draw(st.lists(st.lists(st.integers(1, n_loops), min_size=1, max_size=max_len),
                          min_size=1, max_size=max_requests))
    prompts = draw(st.lists(st.integers(0, 40), min_size=len(exits), max_size=len(exits)))
    return n_loops, exits, prompts


def with_confidences(exits, prompts, n_loops, seed):
    frame = trace_frame(exits, prompts)
    rng = np.random.default_rng(seed)
    for k in range(1, n_loops + 1):
        frame[f"conf_{k}"] = rng.random(len(frame))
        frame[f"correct_{k}"] = frame.exit_loop <= k
    return trace_from_frame(frame, "<hypothesis>", n_loops)


def check_emissions(result, exits):
    """Every token emitted exactly once, in order within its request, time never going back."""
    seen = [[] for _ in exits]
    last_t = -1.0
    for reqs, positions, t in result.emit_log:
        assert t >= last_t
        last_t = t
        for r, j in zip(reqs.tolist(), positions.tolist()):
            seen[r].append((j, t))
    for r, req_exits in enumerate(exits):
        assert [j for j, _ in seen[r]] == list(range(len(req_exits)))
        times = [t for _, t in seen[r]]
        assert times == sorted(times)
    req = result.requests
    assert (req.admitted_s >= req.arrival_s).all()
    assert (req.first_token_s >= req.admitted_s).all() and (req.finish_s >= req.first_token_s).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces(), st.sampled_from(SCHEDULERS), st.integers(1, 6),
       st.sampled_from(("oracle", "confidence", "none")),
       st.sampled_from(("ignore", "propagate", "recompute", "share")),
       st.booleans(), st.integers(0, 3), st.integers(0, 2**16))
def test_invariants_hold(trace_spec, scheduler, batch, exit_policy, kv_policy, online, fit, seed):
    n_loops, exits, prompts = trace_spec
    cfg = RunConfig()
    cfg.progress, cfg.seed = False, seed
    cfg.scheduler.name, cfg.scheduler.batch_size = scheduler, batch
    cfg.exit.policy, cfg.exit.kv_policy = exit_policy, kv_policy
    if exit_policy == "confidence":
        cfg.exit.threshold = 0.6
    cfg.model = looped_model(n_loops)
    if online:
        cfg.workload.arrival, cfg.workload.rate = "poisson", 2000.0
    if fit:  # make memory bind: room for about `fit` of the largest requests
        probe = KVMemory(cfg.model, cfg.hardware, cfg.memory, kv_policy)
        biggest = max(p + len(e) for p, e in zip(prompts, exits)) * probe.per_token
        cfg.hardware.memory_gb = (probe.weights + fit * biggest) / cfg.memory.utilization / 1e9
    validate(cfg)
    result = simulate(cfg, trace=with_confidences(exits, prompts, n_loops, seed), log_emits=True)
    m = result.metrics
    check_emissions(result, exits)
    assert m["num_tokens"] == sum(map(len, exits))
    assert 1 <= m["effective_batch"] <= batch
    if fit:
        assert m["peak_kv_bytes"] <= m["kv_capacity_bytes"]
    assert 0 < m["slot_utilization"] <= 1
    assert 1 <= m["mean_exit_loop"] <= n_loops


@settings(max_examples=80, deadline=None)
@given(traces(max_requests=14), st.sampled_from(SCHEDULERS), st.integers(1, 6),
       st.floats(1e-4, 1.0))
def test_constant_cost_matches_reference(trace_spec, scheduler, batch, step):
    n_loops, exits, prompts = trace_spec
    result = simulate(analytic_config(scheduler, batch, n_loops, step), trace=make_trace(exits, n_loops, prompts))
    assert result.metrics["makespan_s"] == pytest.approx(REFERENCE[scheduler](exits, n_loops, batch) * step,
                                                         rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(traces())
def test_batch_of_one_depthwise_equals_sync_exit(trace_spec):
    """With one slot there is nobody to wait for: both run exactly the exit loops."""
    n_loops, exits, prompts = trace_spec
    trace = make_trace(exits, n_loops, prompts)
    span = {s: simulate(analytic_config(s, 1, n_loops), trace=trace).metrics["makespan_s"]
            for s in ("sync_exit", "depthwise")}
    assert span["depthwise"] == pytest.approx(span["sync_exit"])
    assert span["depthwise"] == pytest.approx(sum(map(sum, exits)) * 1e-3)


def test_a_scheduler_that_cuts_tokens_short_is_caught():
    """The runtime invariants are live: a buggy scheduler that emits every token after
    one loop, whatever its exit, ends the run with an InvariantError."""
    from sim.cost.constant import ConstantCost
    from sim.engine import Engine
    from sim.errors import InvariantError
    from sim.exit import apply_exit_policy
    from sim.schedulers.depthwise import DepthwiseScheduler
    from sim.slots import SlotState
    from sim.step import CostedSteps
    from sim.workload import build_workload

    class EmitsEarly(DepthwiseScheduler):
        def after_step(self, exited, now):
            self.state.emit(self.state.active(), now)
            self.state.admit(now)

    cfg = analytic_config("depthwise", 2, 3)
    trace = make_trace([[3, 2, 1], [2, 2]], 3)
    exits, wrong = apply_exit_policy(trace, cfg.exit, 3)
    wl = build_workload(trace, exits, wrong, 3, cfg.workload, 0)
    state = SlotState(wl, 2, KVMemory(cfg.model, cfg.hardware, cfg.memory, "ignore"), "ignore", 10, True)
    with pytest.raises(InvariantError, match="token-loops"):
        Engine(state, EmitsEarly(state), CostedSteps(ConstantCost(cfg.cost))).run()


@pytest.mark.parametrize("checks", [False, True])
def test_an_exit_check_costs_what_leaving_costs(checks):
    """One exit semantics: a token leaving runs the coda, final norm and head; checking an exit
    is the same pass, so with checks every loop every computing token is charged the coda and
    the head, and without checks only the leaving ones are."""
    from sim.exit import apply_exit_policy
    from sim.slots import SlotState
    from sim.workload import build_workload

    cfg = analytic_config("depthwise", 3, 3)
    trace = make_trace([[1, 3], [2, 2], [3, 1]], 3)
    exits, wrong = apply_exit_policy(trace, cfg.exit, 3)
    wl = build_workload(trace, exits, wrong, 3, cfg.workload, 0)
    state = SlotState(wl, 3, KVMemory(cfg.model, cfg.hardware, cfg.memory, "ignore"), "ignore", 10, checks,
                      edge_layers=True)
    state.admit(0.0)
    load, exited, _ = state.run(state.active())
    assert load.tokens == 3 and exited.size == 1  # the first request's token exits at loop 1
    full_context = load.entering_context  # every token enters loop 1 in the first step
    assert load.exiting == load.heads == (3 if checks else 1)
    assert (load.exiting_context == full_context) == checks
