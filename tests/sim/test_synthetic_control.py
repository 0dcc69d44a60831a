"""Synthetic traces: the exit distribution and output lengths a config asks for are what it gets."""

import numpy as np
import pytest

from sim.config import SyntheticTraceConfig
from sim.errors import ConfigError
from sim.synthetic import generate, geometric_exit_probs
from sim.validate import load_config
from tests.sim.test_config import composed


@pytest.mark.parametrize("mean,loops", [(1.0, 2), (1.09, 2), (1.5, 2), (2.0, 2), (1.7, 3), (2.5, 3), (3.2, 4)])
def test_geometric_probs_have_the_requested_mean(mean, loops):
    p = geometric_exit_probs(mean, loops)
    assert p.min() >= 0 and p.sum() == pytest.approx(1)
    assert (np.arange(1, loops + 1) * p).sum() == pytest.approx(mean, abs=1e-9)
    if loops == 2:
        assert p[0] == pytest.approx(2 - mean)  # share leaving after loop 1


@pytest.mark.parametrize("mean,loops,rho", [(1.2, 2, 0.5), (1.6, 2, 0.0), (2.2, 3, 0.5)])
def test_generated_trace_mean_exit_matches_request(mean, loops, rho):
    cfg = SyntheticTraceConfig(num_requests=400, prompt_len=8, gen_len=128, exit_probs=[1 / loops] * loops,
                               correlation=rho, mean_exit=mean)
    exits = generate(cfg, seed=3)["exit_loop"].to_numpy()
    assert exits.min() >= 1 and exits.max() <= loops
    assert exits.mean() == pytest.approx(mean, abs=0.02)


def test_gen_len_min_gives_uniform_lengths_up_to_the_cap():
    cfg = SyntheticTraceConfig(num_requests=2000, prompt_len=16, gen_len=100, length_dist="fixed", gen_len_min=40)
    frame = generate(cfg, seed=0)
    lengths = frame.groupby("request_id").size().to_numpy()
    assert lengths.min() >= 40 and lengths.max() <= 100
    assert lengths.mean() == pytest.approx(70, abs=1.5)
    assert (frame["prompt_len"] == 16).all()  # prompts keep their own (fixed) distribution


def test_lengths_do_not_depend_on_the_exit_distribution():
    """The paper fit relies on it: changing mean_exit leaves every request's length alone."""
    a, b = (generate(SyntheticTraceConfig(num_requests=50, exit_probs=[0.5, 0.5], mean_exit=m, gen_len_min=5), 1)
            for m in (1.1, 1.9))
    assert a.groupby("request_id").size().equals(b.groupby("request_id").size())


@pytest.mark.parametrize("override,fragment", [
    ("trace.synthetic.mean_exit=2.5", "mean_exit=2.5"), ("trace.synthetic.mean_exit=0.9", "mean_exit=0.9"),
    ("trace.synthetic.gen_len_min=5000", "gen_len_min=5000"), ("trace.synthetic.gen_len_min=0", "gen_len_min=0")])
def test_bad_synthetic_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(composed("trace=paper_like", override))
