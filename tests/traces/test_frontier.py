"""traces.frontier end to end on the real SmolLM2 layout: a converted checkpoint (LoRA zeroed, no
SVD: fast) serves a short trace cut from the default one (its first positions, its prompts), every
point runs for real, free-running, and is scored by the original model; the CSV's overrides must
reproduce its simulated makespans."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

from sim.trace import DEFAULT_TRACE  # noqa: E402
from sim.trace_io import write_trace_parquet  # noqa: E402

POSITIONS = 6


@pytest.fixture(scope="module")
def short_trace(tmp_path_factory):
    """The default trace's first POSITIONS tokens of each request, its metadata (prompts) kept."""
    t = pq.read_table(DEFAULT_TRACE)
    meta = {k.decode(): v.decode() for k, v in (t.schema.metadata or {}).items() if not k.startswith(b"pandas")}
    df = t.to_pandas()
    df = df[df.position < POSITIONS]
    path = tmp_path_factory.mktemp("trace") / "short.parquet"
    write_trace_parquet(df, path, meta)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from traces.base_model import load_base
    from traces.recursive import RecursiveSpec, convert, save_model
    hf, _ = load_base("gguf")
    path = tmp_path_factory.mktemp("ck") / "converted.pt"
    save_model(convert(hf, RecursiveSpec(2, 1, 1, "average", 64), svd=False), path)
    return path


def _args(tmp, checkpoint, trace, **kw):
    a = {"--checkpoint": str(checkpoint), "--trace": str(trace), "--thresholds": "0,0.9",
         "--kv-policies": "ignore,share", "--batches": "2", "--reps": "2", "--num-requests": "3",
         "--references": "continuous,depthwise_spec,oracle", "--out": str(tmp / "runs"), "--csv": str(tmp / "f.csv"),
         "--figure": str(tmp / "f"), **kw}
    return [x for k, v in a.items() for x in (k, v)] + ["--no-pause"]


def test_frontier_runs_every_point_for_real(tmp_path, checkpoint, short_trace):
    from analysis.exit_frontier import check
    from traces.frontier import main
    assert main(_args(tmp_path, checkpoint, short_trace)) == 0
    t = pd.read_csv(tmp_path / "f.csv")
    assert len(t) == 3 + 2 * 2 and (t.repeats == 2).all()
    assert set(t.policy) == {"continuous", "depthwise_spec", "oracle", "live"}
    cont = t[t.policy == "continuous"].iloc[0]
    assert cont.real_speedup == 1.0 and cont.token_agreement == 1.0 and cont.identical_share == 1.0
    assert cont.orig_loglik == pytest.approx(cont.ref_orig_loglik)
    spec = t[t.policy == "depthwise_spec"].iloc[0]
    assert spec.quality_basis == "measured" and spec.token_agreement == 1.0  # lossless, measured
    live = t[t.policy == "live"].set_index(["kv_policy", "threshold"])
    # threshold 0: every token leaves after loop 1, in the real run and in the simulator
    assert live.real_mean_exit_loop[("ignore", 0.0)] == 1.0 and live.sim_mean_exit_loop[("ignore", 0.0)] == 1.0
    assert (live.real_mean_exit_loop.xs(0.9, level="threshold") > 1.0).all()
    assert t.generated_stable[t.free_running].all()  # greedy: each repeat emits the same text
    assert ((t.token_agreement >= 0) & (t.token_agreement <= 1)).all() and t.orig_loglik.lt(0).all()
    assert check(t) == []  # every row's overrides reproduce its sim_makespan_s
    assert (tmp_path / "f.png").stat().st_size > 0
    gen = pd.read_parquet(tmp_path / "runs" / "live_b2_t0_ignore" / "generated.parquet")
    assert len(gen) == cont.num_tokens
    assert (tmp_path / "runs" / "live_b2_t0_ignore" / "quality.json").is_file()


@pytest.mark.parametrize("extra, says", [(["--kv-policies", "bogus"], "kv-policies"),
                                         (["--thresholds", ""], "thresholds"),
                                         (["--thresholds", "0.5,1.5"], "[0, 1]"),
                                         (["--references", "oracle"], "continuous"),
                                         (["--checkpoint", "missing.pt"], "missing.pt")])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, checkpoint, short_trace, extra, says):
    args = _args(tmp_path, checkpoint, short_trace) + extra
    p = subprocess.run([sys.executable, "-m", "traces.frontier", *args], capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and says in last and "Traceback" not in p.stderr
    assert not (tmp_path / "f.csv").exists() and not (tmp_path / "runs").exists()
