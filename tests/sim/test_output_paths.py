"""Outputs land under the working directory and committed tables name files relative to
the repository, so an installed package and another machine write the same (issue 30)."""
from sim.cost_profiled import BUNDLED, read_profile
from sim.run import format_summary
from sim.trace import DEFAULT_TRACE
from sim.trace_io import REPO, repo_relative


def test_repo_paths_are_stored_relative_and_others_as_given():
    assert repo_relative(DEFAULT_TRACE) == "traces/data/smollm2_r2_mc_r64_coda.parquet"
    assert repo_relative("/elsewhere/x.parquet") == "/elsewhere/x.parquet"
    assert repo_relative("<synthetic seed=0>") == "<synthetic seed=0>"
    assert repo_relative(None) is None


def test_committed_figure_tables_hold_no_absolute_path():
    for csv in (REPO / "figures" / "data").glob("*.csv"):
        text = csv.read_text()
        assert "/work/" not in text and "site-packages" not in text and "/home/" not in text, csv.name


def test_a_profiled_summary_names_the_profile_cpu_not_the_hardware():
    meta = read_profile(BUNDLED)["metadata"]
    m = {"scheduler": "depthwise", "exit_policy": "oracle", "kv_policy": "ignore", "batch_size": 8,
         "model": "smollm2_135m_r2_mc", "hardware": "a100_40g", "cost": "profiled", "num_requests": 1,
         "num_tokens": 1, "peak_kv_bytes": 0, **{k: 1.0 for k in (
             "throughput_tok_s", "makespan_s", "effective_batch", "mean_exit_loop", "loop_steps_per_token",
             "slot_utilization", "accuracy_cost", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s",
             "e2e_p50_s", "e2e_p99_s")}}
    text = format_summary(m, profile={"path": "sim/profiles/x.json", "metadata": meta})
    head = text.splitlines()[0]
    assert f"on {meta['device']} (profiled cost)" in head and "a100_40g" not in text
    assert f"measured on {meta['device']}" in text
