"""cost=gpu_profile: interpolation of the bundled Vidur rows, depth-wise pricing, bad input, and
the published check reproducing its committed CSV."""

import csv
import shlex
from pathlib import Path

import pandas as pd
import pytest

from analysis.grid import compose_run
from sim.cost import StepLoad, make_cost_model
from sim.errors import ConfigError
from sim.gpu_profiles import DENSE_OPS, VIDUR_DIR, Curve
from sim.model_size import lora_params_per_loop, non_embedding_params, weight_bytes
from sim.simulation import simulate
from tests.sim.test_cli import REPO, run_cli

LLAMA_A100 = VIDUR_DIR / "compute" / "a100" / "meta-llama" / "Llama-2-7b-hf" / "mlp.csv"
PUBLISHED = REPO / "figures" / "data" / "gpu_published.csv"


def csv_layer_ms(path: Path, tokens: int) -> float:
    """A decoder layer's summed operator medians at `tokens` (TP 1) straight from the file,
    duplicate rows averaged: the hand computation the cost model must agree with."""
    sums = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if int(row["num_tokens"]) == tokens and int(row["num_tensor_parallel_workers"]) == 1:
                sums.append(sum(float(row[f"time_stats.{op}.median"]) for op in DENSE_OPS
                                if f"time_stats.{op}.median" in row))
    assert sums, f"no row at {tokens} tokens"
    return sum(sums) / len(sums)


def cost(*over: str):
    cfg = compose_run(list(over))
    return make_cost_model(cfg.cost, cfg.hardware, cfg.model), cfg


def test_layer_time_interpolates_the_bundled_rows():
    c, _ = cost("model=llama2_7b_vanilla", "cost=gpu_profile", "hardware=a100_80g")
    at8, at16 = csv_layer_ms(LLAMA_A100, 8), csv_layer_ms(LLAMA_A100, 16)
    assert c.layer(8) == pytest.approx(at8 * 1e-3, rel=1e-12)
    assert c.layer(12) == pytest.approx((at8 + at16) / 2 * 1e-3, rel=1e-12)  # halfway between measured rows
    # 4096 tokens is measured twice: the two rows' sums averaged
    assert c.layer(4096) == pytest.approx(csv_layer_ms(LLAMA_A100, 4096) * 1e-3, rel=1e-12)
    assert 8.0e-3 < c.layer(4096) < 8.3e-3 and 0.27e-3 < c.layer(1) < 0.30e-3  # reference.md: 0.290 / ... ms


def test_out_of_range_clamps_below_extrapolates_above_and_warns_once(capsys):
    curve = Curve("test curve", [8, 16, 128], [1.0, 2.0, 9.0])
    assert curve(4) == 1.0 and curve(2) == 1.0  # clamped
    slope = (9.0 - 1.0) / (128 - 8)
    assert curve(256) == pytest.approx(9.0 + slope * 128) and curve(1000) == pytest.approx(9.0 + slope * 872)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "clamped" in err[0] and "extrapolated" in err[1]


def test_depthwise_step_is_shared_dense_ops_at_all_rows_plus_each_loops_lora():
    """24 rows at two loops: the block's measured layer at 24 rows once, plus two loops' adapters;
    the same rows at one loop differ by one loop's adapters only."""
    c, cfg = cost("model=llama2_7b_r2_mc", "cost=gpu_profile", "hardware=a100_80g", "cost.cpu_overhead=false")
    m = cfg.model

    def load(loops: int) -> StepLoad:
        return StepLoad(tokens=24, distinct_loops=loops, context=24 * 300, entering=0, entering_context=0,
                        exiting=0, exiting_context=0, heads=0, kv_proj_layers=0, prefill=[])

    dense = m.layers_per_block * csv_layer_ms(LLAMA_A100, 24) * 1e-3
    kv = 2 * m.n_kv_heads * m.head_dim * 2  # bytes per position and layer
    attention = max(kv * m.layers_per_block * (24 * 300 + 24) / c.bandwidth,
                    4.0 * m.layers_per_block * m.n_heads * m.head_dim * 24 * 300 / c.flops, m.layers_per_block * c.kernel_s)
    lora = lora_params_per_loop(m)  # rank 64 over 7 matrices in each of 15 layers
    assert lora == 64 * 15 * (4 * (4096 + 4096) + 3 * (4096 + 11008))
    kernels = 2 * 7 * 15

    def adapters(loops: int) -> float:
        return max(2 * lora * loops / c.bandwidth, 2.0 * lora * 24 / c.flops, kernels * loops * c.kernel_s)

    assert c.step_time(load(2)) == pytest.approx(dense + attention + adapters(2), rel=1e-12)
    assert c.step_time(load(2)) - c.step_time(load(1)) == pytest.approx(adapters(2) - adapters(1), rel=1e-9)
    assert adapters(2) > adapters(1) > 0


def test_cpu_overhead_is_the_measured_table_at_the_batch():
    """A vanilla step of 8 rows pays schedule + sampler + inputs + outputs of the A100 host at batch 8."""
    c, _ = cost("model=llama2_7b_vanilla", "cost=gpu_profile", "hardware=h100")
    table = pd.read_csv(VIDUR_DIR / "cpu_overheads" / "a100.csv")
    row = table[(table["model_name"] == "meta-llama/Llama-2-7b-hf") & (table["batch_size"] == 8)].iloc[0]
    want = (row["schedule_mean"] + row["sampler_e2e_mean"] + row["prepare_inputs_e2e_mean"]
            + row["process_model_outputs_mean"]) * 1e-3
    step = StepLoad(tokens=8, distinct_loops=1, context=800, entering=8, entering_context=800, exiting=8,
                    exiting_context=800, heads=8, kv_proj_layers=0, prefill=[])
    assert c.cpu_time(step) == pytest.approx(want, rel=1e-12)
    assert 1.2e-3 < want < 1.3e-3  # reference.md: about 1.3 ms at batch 8
    # a later loop step of an iteration (no token enters, none samples) pays no CPU work
    later = StepLoad(tokens=8, distinct_loops=1, context=800, entering=0, entering_context=0, exiting=0,
                     exiting_context=0, heads=0, kv_proj_layers=0, prefill=[])
    assert c.cpu_time(later) == 0.0


def test_memory_reads_the_same_bytes_as_the_cost():
    """phi-2 has an ungated MLP: 2.78B parameters (Llama-2-7B 6.74B), and the cost model's
    bandwidth is its layer's bytes over the measured projections."""
    _, phi = cost("model=phi2_vanilla")
    _, llama = cost("model=llama2_7b_vanilla")
    assert weight_bytes(phi.model) / 2 == pytest.approx(2.78e9, rel=0.01)
    assert weight_bytes(llama.model) / 2 == pytest.approx(6.74e9, rel=0.01)
    assert non_embedding_params(phi.model) == 32 * (4 * 2560 * 2560 + 2 * 2560 * 10240)


def test_unmeasured_shape_is_one_line_exit_2_listing_the_measured_ones():
    done = run_cli("model=gemma2b_r2", "cost=gpu_profile", "hardware=a100_80g")
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0
    assert "Llama-2-7b-hf" in done.stderr and "phi-2" in done.stderr and "gemma2b_r2" in done.stderr


@pytest.mark.slow
def test_unknown_profile_is_one_line_exit_2_listing_the_profiles():
    done = run_cli("model=llama2_7b_vanilla", "cost=gpu_profile", "hardware=a100_80g", "cost.profile=b200")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "a100" in done.stderr and "h100" in done.stderr


@pytest.mark.parametrize("over, says", [
    (["model=llama2_7b_vanilla", "hardware=a100_80g", "cost.profile=b200"], "'b200' is not known; measured: a100"),
    (["model=llama2_7b_vanilla", "hardware=h200"], "no measured profile for hardware=h200"),
    (["model=llama2_7b_vanilla", "hardware=a100_80g", "cost.profile=h100"], "measured on hardware=h100"),
    (["model=smollm2_135m_r2_mc", "hardware=h100"], "no measured layer shape"),
    (["model=llama2_7b_vanilla", "hardware=a100_80g", "model.dtype_bytes=4"], "fp16"),
])
def test_no_silent_fallback(over, says):
    with pytest.raises(ConfigError, match=says):
        cost("cost=gpu_profile", *over)


def test_committed_published_points_come_from_their_overrides():
    """Three cheap points of figures/data/gpu_published.csv, rerun from their overrides alone."""
    table = pd.read_csv(PUBLISHED)
    assert len(table) >= 6 and table[["gpu_profile_err", "roofline_err"]].notna().all().all()
    keys = {"ms per request": "e2e_p50_s", "ms to first token": "ttft_p50_s"}
    for i in (1, 5, 12):  # NeMo A100 and H100 at batch 1, TensorRT-LLM's first token
        row = table.iloc[i]
        for model in ("gpu_profile", "roofline"):
            got = simulate(compose_run([*shlex.split(row["overrides"]), f"cost={model}"])).metrics
            assert got[keys[row["metric"]]] * 1e3 == pytest.approx(row[model], rel=1e-5)


@pytest.mark.slow
def test_published_check_reproduces_the_committed_csv():
    """`python -m analysis.gpu_published` in-process (about 30 s): the same numbers as committed."""
    from analysis.gpu_published import table

    fresh, committed = table(), pd.read_csv(PUBLISHED)
    assert list(fresh.columns) == list(committed.columns)
    for col in fresh.columns:
        if fresh[col].dtype.kind == "f":
            assert fresh[col].to_numpy() == pytest.approx(committed[col].to_numpy(), rel=1e-5), col
        else:
            assert (fresh[col].astype(str) == committed[col].astype(str)).all(), col
