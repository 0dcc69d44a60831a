"""The step seam's declarations: a StepClock says what it can do, the engine believes it."""

import numpy as np
import pytest

from sim.cost import ConstantCost
from sim.errors import ConfigError
from sim.simulation import simulate
from sim.step import CostedSteps, StepBatch, StepClock
from tests.sim.helpers import analytic_config, make_trace


def test_capabilities_default_to_none():
    for clock in (StepClock, CostedSteps):
        assert (clock.needs_batch, clock.decides_exits, clock.decides_acceptance) == (False, False, False)


def test_drafting_defaults_to_all_false():
    """The executor builds batches positionally with six fields; `drafting` then is all False."""
    slots = np.arange(3)
    b = StepBatch(slots, slots.copy(), np.zeros(3, np.int64), np.ones(3, np.int64), np.zeros(3, bool),
                  np.zeros(0, np.int64))
    assert b.drafting.dtype == bool and b.drafting.shape == (3,) and not b.drafting.any()


class LeavesAtLoopOne(CostedSteps):
    """exit=live without a model: every row leaves after the loop it just ran."""

    needs_batch = True
    decides_exits = True

    def step_seconds(self, load, batch):
        self.leaving = np.ones(batch.slots.size, dtype=bool)
        return super().step_seconds(load, batch)


def live_config():
    cfg = analytic_config("depthwise", 1, 3)
    cfg.exit.policy = "live"
    return cfg


def test_a_clock_that_decides_exits_is_followed():
    cfg = live_config()
    trace = make_trace([[3, 3, 2], [3, 1]], 3)  # the trace's exits are ignored under exit=live
    res = simulate(cfg, trace=trace, clock=LeavesAtLoopOne(ConstantCost(cfg.cost)))
    assert res.metrics["makespan_s"] == pytest.approx(5e-3) and res.metrics["mean_exit_loop"] == 1.0


def test_a_clock_that_does_not_decide_exits_is_refused_for_exit_live():
    cfg = live_config()
    with pytest.raises(ConfigError, match="needs a step clock that decides exits"):
        simulate(cfg, trace=make_trace([[3]], 3), clock=CostedSteps(ConstantCost(cfg.cost)))


def test_a_factory_gets_the_workload_and_the_state():
    cfg = analytic_config("depthwise", 2, 3)
    seen = []

    def factory(wl, state):
        seen.append((wl.num_tokens, state.batch_size, state.checks_every_loop))
        return CostedSteps(ConstantCost(cfg.cost))

    res = simulate(cfg, trace=make_trace([[3, 1], [2]], 3), clock=factory)
    assert seen == [(3, 2, True)] and res.metrics["makespan_s"] == pytest.approx(4e-3)
