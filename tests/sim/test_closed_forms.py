"""Each scheduler's makespan equals an independent reference under cost=constant."""

import numpy as np
import pytest

from sim.simulation import simulate
from tests.sim.helpers import analytic_config, make_trace, random_exits
from tests.sim.reference import REFERENCE

SCHEDULERS = list(REFERENCE)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("seed", range(8))
def test_makespan_matches_reference(scheduler, seed):
    rng = np.random.default_rng(seed)
    n_loops = int(rng.integers(1, 5))
    exits = random_exits(rng, n_req=int(rng.integers(1, 30)), max_len=12, num_loops=n_loops)
    batch = int(rng.integers(1, 9))
    step = 0.0025
    result = simulate(analytic_config(scheduler, batch, n_loops, step), trace=make_trace(exits, n_loops))
    expected = REFERENCE[scheduler](exits, n_loops, batch) * step
    assert result.metrics["makespan_s"] == pytest.approx(expected, rel=1e-12)
    assert result.metrics["num_tokens"] == sum(map(len, exits))


@pytest.mark.parametrize("n_loops,exit_loop", [(2, 1), (3, 1), (3, 2), (4, 3), (3, 3)])
def test_depthwise_over_static_is_loops_over_exit(n_loops, exit_loop):
    batch, n_req, gen = 4, 12, 10
    exits = [[exit_loop] * gen for _ in range(n_req)]
    trace = make_trace(exits, n_loops)
    thr = {s: simulate(analytic_config(s, batch, n_loops), trace=trace).metrics["throughput_tok_s"]
           for s in ("static", "depthwise")}
    assert thr["depthwise"] / thr["static"] == pytest.approx(n_loops / exit_loop, rel=1e-12)


def test_sync_exit_waits_for_slowest_token():
    # Two requests side by side: one always exits at loop 1, the other at loop 3.
    exits = [[1] * 5, [3] * 5]
    trace = make_trace(exits, 3)
    sync = simulate(analytic_config("sync_exit", 2, 3), trace=trace).metrics
    deep = simulate(analytic_config("depthwise", 2, 3), trace=trace).metrics
    assert sync["makespan_s"] == pytest.approx(15e-3)  # every iteration takes 3 steps
    assert deep["makespan_s"] == pytest.approx(15e-3)  # the deep request alone needs 15
    assert sync["e2e_p50_s"] == pytest.approx(15e-3)
    assert deep["e2e_p50_s"] == pytest.approx((5e-3 + 15e-3) / 2)  # the easy one is done after 5


def test_latencies_depthwise_closed_form():
    exits = [[2, 1, 3]]
    res = simulate(analytic_config("depthwise", 1, 3), trace=make_trace(exits, 3))
    req = res.requests.iloc[0]
    assert req.first_token_s == pytest.approx(2e-3)
    assert req.finish_s == pytest.approx(6e-3)
    assert res.metrics["tpot_p50_s"] == pytest.approx(2e-3)


def test_constant_prefill_and_head_costs_add_per_step():
    cfg = analytic_config("static", 2, 2)
    cfg.cost.prefill_s, cfg.cost.head_s = 0.5, 0.25
    exits = [[2, 2], [2, 2]]
    res = simulate(cfg, trace=make_trace(exits, 2))
    # 4 loop steps of 1 ms; one prefill step of two requests (2 x 0.5 s);
    # static checks heads only at the last loop: 2 of the 4 steps.
    assert res.metrics["makespan_s"] == pytest.approx(4e-3 + 1.0 + 2 * 0.25)


@pytest.mark.parametrize("every_loop,heads", [(True, 4), (False, 2)])
def test_head_cost_every_loop_or_only_on_exit(every_loop, heads):
    cfg = analytic_config("depthwise", 1, 2)
    cfg.cost.head_s = 0.25
    cfg.exit.head_every_loop = every_loop
    res = simulate(cfg, trace=make_trace([[2, 2]], 2))
    assert res.metrics["makespan_s"] == pytest.approx(4e-3 + heads * 0.25)
