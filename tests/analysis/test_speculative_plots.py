"""The speculative figure group's trace replays agree with the simulator."""

import numpy as np
import pytest

from analysis.speculative_plots import DRAFT_LENS, points, run_length_figure, run_lengths, settings, tokens_per_round
from sim.simulation import simulate
from tests.sim.test_speculative import spec_config, spec_trace


def test_run_lengths_start_rounds_after_each_rejection():
    trace = spec_trace([[True, True, False, False, True], [True]], 2)
    # request 0: rounds at 0 (2 right, then a miss), at 3 (a miss at once), at 4 (1 right, end);
    # request 1: one round, 1 right.
    assert run_lengths(trace, 1).tolist() == [2, 0, 1, 1]


@pytest.mark.parametrize("seed", range(4))
def test_tokens_per_round_equals_the_simulated_metric(seed):
    rng = np.random.default_rng(seed)
    accepts = [list(rng.random(rng.integers(1, 30)) < 0.7) for _ in range(6)]
    trace = spec_trace(accepts, 3, 2)
    for k in (1, 3, 8):
        m = simulate(spec_config(3, 3, k, 2), trace=trace).metrics
        assert tokens_per_round(trace, 2, k) == pytest.approx(m["mean_tokens_per_round"], rel=1e-12)


def test_every_setting_compares_each_draft_length_with_the_baselines():
    for s in settings():
        pts = points(s)
        assert len(pts) == (3 + len(DRAFT_LENS)) * len(s.batches)
        assert {p for pt in pts for p in pt if p.startswith("scheduler.draft_len")} == \
            {f"scheduler.draft_len={k}" for k in DRAFT_LENS}
    assert 1 in settings()[0].batches and 8 in settings()[0].batches and 64 in settings()[0].batches


@pytest.mark.slow
def test_run_length_figure_renders(tmp_path):
    name, caption, files = run_length_figure(tmp_path)
    assert name == "speculative_run_lengths" and "d < N" in caption
    assert all(f.stat().st_size > 10_000 for f in files)


def test_batch_and_latency_grids_leave_speculative_to_its_own_group():
    from analysis.figures import FIGURES, grid_schedulers

    grid = grid_schedulers()
    assert "speculative" not in grid and {"static", "continuous", "sync_exit", "depthwise"} <= set(grid)
    assert "speculative" in FIGURES
