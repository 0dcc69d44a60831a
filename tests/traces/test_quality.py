"""traces.quality: agreement measures on hand-made generated.parquet files with known answers,
and the original model's log-likelihood against an independent token-by-token computation."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from sim.errors import TraceError, UserError  # noqa: E402
from traces.quality import agreement, loglik, measure, read_generated  # noqa: E402


def write_generated(path, tokens: dict[int, list[int]]):
    rows = [(r, p, t) for r, ts in tokens.items() for p, t in enumerate(ts)]
    df = pd.DataFrame(rows, columns=["request_id", "position", "token"]).sample(frac=1, random_state=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)  # shuffled rows: reading must sort by request and position
    return path


REF = {0: [1, 2, 3, 4], 1: [5, 6, 7], 2: [8, 9]}
RUN = {0: [1, 2, 3, 4], 1: [5, 0, 7], 2: [0, 9]}


def test_agreement_measures_have_the_known_answers(tmp_path):
    ref = read_generated(write_generated(tmp_path / "ref" / "generated.parquet", REF))
    run = read_generated(write_generated(tmp_path / "run" / "generated.parquet", RUN))
    a = agreement(run, ref)
    assert a.summary["token_agreement"] == pytest.approx(7 / 9)
    assert a.summary["mean_prefix_tokens"] == pytest.approx((4 + 1 + 0) / 3)
    assert a.summary["identical_share"] == pytest.approx(1 / 3)
    assert a.per_request.prefix_tokens.tolist() == [4, 1, 0]
    assert a.per_request.identical.tolist() == [True, False, False]
    assert a.by_position.agreement.tolist() == pytest.approx([2 / 3, 2 / 3, 1.0, 1.0])
    assert a.by_position.requests.tolist() == [3, 3, 2, 1]
    same = agreement(ref, ref).summary
    assert (same["token_agreement"], same["identical_share"], same["mean_prefix_tokens"]) == (1.0, 1.0, 3.0)


def test_mismatched_or_malformed_outputs_are_refused(tmp_path):
    ref = read_generated(write_generated(tmp_path / "a.parquet", REF))
    with pytest.raises(UserError, match="request 2"):
        agreement({**ref, 2: np.array([8])}, ref)
    with pytest.raises(UserError, match="different requests"):
        agreement({0: ref[0]}, ref)
    pd.DataFrame({"request_id": [0, 0], "position": [0, 2], "token": [1, 2]}).to_parquet(tmp_path / "gap.parquet")
    with pytest.raises(TraceError, match="request 0"):
        read_generated(tmp_path / "gap.parquet")
    pd.DataFrame({"request_id": [0], "token": [1]}).to_parquet(tmp_path / "nopos.parquet")
    with pytest.raises(TraceError, match="position"):
        read_generated(tmp_path / "nopos.parquet")


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    write_generated(tmp_path / "ref" / "generated.parquet", REF)
    p = subprocess.run([sys.executable, "-m", "traces.quality", str(tmp_path / "missing"),
                        "--reference", str(tmp_path / "ref")], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "generated.parquet" in p.stderr
    assert not (tmp_path / "ref" / "quality.json").exists()


@pytest.fixture(scope="module")
def original():
    from traces.base_model import load_base
    return load_base("gguf")


def test_loglik_equals_token_by_token_computation(original):
    model, tok = original
    prompts = [np.array(tok("The capital of France is").input_ids),
               np.array(tok("Write one sentence about the sea, please:").input_ids)]
    outputs = [np.array(tok(" Paris. It is a city").input_ids),
               np.array(tok(" The sea is wide and deep and blue, and it never sleeps.").input_ids)]
    batched = loglik(model, prompts, outputs, batch=2)  # the short one is right-padded
    with torch.no_grad():
        for p, o, got in zip(prompts, outputs, batched):
            seq = np.concatenate([p, o])
            want = 0.0
            for t in range(p.size, seq.size):
                logits = model(torch.as_tensor(seq[None, :t])).logits[0, -1].double()
                want += float(torch.log_softmax(logits, -1)[seq[t]])
            assert got == pytest.approx(want, abs=2e-3 * o.size)
    # a run of unlikely tokens scores worse than fluent text
    assert loglik(model, prompts[:1], [np.array([40000, 123, 40000, 7])])[0] / 4 < batched[0] / outputs[0].size


def per_token(folder, request: int) -> float:
    """A request's cached mean log-likelihood per token (loglik.parquet)."""
    df = pd.read_parquet(folder / "loglik.parquet").set_index("request_id")
    return df.loglik_sum[request] / df.tokens[request]


def _run_folder(path, overrides, tokens):
    from omegaconf import OmegaConf

    from traces.execute import compose
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(OmegaConf.to_yaml(compose(overrides)))
    write_generated(path / "generated.parquet", tokens)
    return path


def test_measure_scores_the_run_and_the_reference_on_the_workloads_prompts(tmp_path, original):
    """End to end on a real composed workload of the default trace: the prompts are the ones
    the executor feeds (chat template of the trace's prompts), the reference is the trace's own
    tokens, the run a copy that diverges halfway through request 1."""
    from sim.simulation import load_run_trace
    from traces.quality import run_config, workload_prompts
    from traces.serving.inputs import request_sequences

    from sim.config import load_config
    from sim.workload import build_workload
    from traces.execute import compose

    ov = ["scheduler=continuous", "exit=none", "workload.num_requests=2", "seed=3"]
    cfg = load_config(compose(ov))
    trace = load_run_trace(cfg)
    wl = build_workload(trace, trace.exit_loop, np.zeros(trace.num_tokens, bool), 2, cfg.workload, cfg.seed)
    seqs = request_sequences(trace, wl, original[1])
    # the trace's own tokens as the reference output
    gen = {r: seqs[r][int(wl.prompt_len[r]):].tolist() for r in range(2)}
    G = [len(gen[0]), len(gen[1])]
    ref_dir = _run_folder(tmp_path / "ref", ov, gen)
    prompts, src, gen_len = workload_prompts(run_config(ref_dir), original[1])
    assert [p.tolist() for p in prompts] == [s[:int(P)].tolist() for s, P in zip(seqs, wl.prompt_len)]
    assert gen_len.tolist() == G
    noise = np.random.default_rng(0).integers(1000, 40000, G[1] - 6).tolist()
    run = {0: gen[0], 1: gen[1][:6] + noise}
    run_dir = _run_folder(tmp_path / "run", ov[2:] + ["scheduler=depthwise", "exit=oracle"], run)
    s = measure(run_dir, ref_dir, scorer=original)
    assert s["token_agreement"] == pytest.approx((G[0] + 6) / sum(G))
    assert s["identical_share"] == 0.5 and s["mean_prefix_tokens"] == pytest.approx((G[0] + 6) / 2)
    # random tokens are worse text (a repeated token would not be: the model learns to copy it)
    assert s["orig_loglik"] < s["ref_orig_loglik"] - 1
    # ... but the score does not penalise degenerate repetition: the model learns to copy
    rep = loglik(original[0], [prompts[1]], [np.array(gen[1][:6] + [40000] * (G[1] - 6))])[0] / G[1]
    assert rep > per_token(ref_dir, 1)
    per = pd.read_parquet(run_dir / "quality.parquet")
    assert per.trace_request.tolist() == src.tolist()
    assert per.orig_loglik[0] == pytest.approx(per.ref_orig_loglik[0])  # identical output, identical score
    assert (ref_dir / "loglik.parquet").is_file()
    again = measure(run_dir, ref_dir, scorer=(None, original[1]))  # cached: no model needed
    assert again["orig_loglik"] == s["orig_loglik"]
    bad = _run_folder(tmp_path / "other", ["workload.num_requests=2", "seed=4"], gen)
    with pytest.raises(UserError, match="seed"):
        measure(bad, ref_dir, scorer=original)
    cut = _run_folder(tmp_path / "cut", ov, {0: gen[0][:5], 1: gen[1]})
    with pytest.raises(UserError, match="request 0"):  # an unfinished run is not scored
        measure(cut, _run_folder(tmp_path / "ref3", ov, {0: gen[0][:5], 1: gen[1]}), scorer=original)
