"""Uptrain -> checkpoint -> resume -> record on a tiny model; trace contract."""
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("hydra")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

REQUIRED_META = ["num_loops", "model", "loops", "layout", "init", "lora_rank", "uptrain_steps",
                 "uptrain_tokens", "prompts", "commit", "command", "date"]


def _cfg(name, overrides):
    from hydra import compose, initialize_config_module
    with initialize_config_module(config_module="traces.conf", version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def _uptrain(tiny_dir, out, steps):
    from traces.uptrain import train
    cfg = _cfg("uptrain", [f"source={tiny_dir}", f"out_dir={out}", "name=tiny", "num_loops=3",
                           "prelude_layers=1", "coda_layers=1", "lora_rank=4", f"max_steps={steps}", "eval_every=2",
                           "eval_prompts=3", "eval_max_new=8", "refresh_every=3", "refresh_batch=3",
                           "refresh_max_new=12", "min_pool_tokens=40", "seq_len=16", "batch=2"])
    return train(cfg)


@pytest.fixture(scope="module")
def recorded(tiny_dir, tmp_path_factory):
    import os
    base = tmp_path_factory.mktemp("pipeline")
    old = os.environ.get("RRTSIM_CACHE")
    os.environ["RRTSIM_CACHE"] = str(base / "cache")
    try:
        run = base / "run"
        s1 = _uptrain(tiny_dir, run, 3)
        s2 = _uptrain(tiny_dir, run, 5)  # resumes from last.pt
        from traces.record import run as record
        cfg = _cfg("record", [f"checkpoint={run / 'best.pt'}", f"source={tiny_dir}", "name=tiny",
                              f"out_dir={base / 'data'}", "num_prompts=5", "batch=2", "max_new=7"])
        path, stats = record(cfg)
    finally:
        if old is None:
            os.environ.pop("RRTSIM_CACHE", None)
        else:
            os.environ["RRTSIM_CACHE"] = old
    return {"run": run, "s1": s1, "s2": s2, "path": path, "stats": stats}


def test_uptrain_checkpoints_resumes_and_logs_curve(recorded):
    import csv
    run = recorded["run"]
    assert recorded["s1"]["step"] == 3 and recorded["s2"]["step"] == 5
    assert (run / "last.pt").exists() and (run / "best.pt").exists()
    rows = list(csv.DictReader(open(run / "curve.csv")))
    # every eval_every=2 steps, plus each run's final model (3, 5) where its budget ended
    # between evaluations; the resumed run did not re-evaluate step 0
    assert [int(r["step"]) for r in rows] == [0, 2, 3, 4, 5]
    assert all(0 <= float(r["agree_3"]) <= 1 for r in rows)
    assert "resumed from" in (run / "log.txt").read_text()


def test_uptrain_records_the_precision_auto_resolved_to(recorded):
    from traces.precision import resolve_amp, resolve_dtype
    cfg = torch.load(recorded["run"] / "last.pt", map_location="cpu", weights_only=False)["config"]
    assert cfg["amp"] is resolve_amp("auto", "cpu")[0]  # a bool, not "auto"
    assert cfg["teacher_dtype"] == resolve_dtype("auto", "cpu")[0]
    assert f"teacher {cfg['teacher_dtype']} (" in (recorded["run"] / "log.txt").read_text()


def test_trace_contract(recorded):
    t = pq.read_table(recorded["path"])
    meta = {k.decode(): v.decode() for k, v in t.schema.metadata.items()}
    for k in REQUIRED_META:
        assert k in meta, k
    assert meta["num_loops"] == "3" and meta["layout"] == "middle_cycle"
    from sim.layout import Layout
    # the tiny model: 8 layers = 1 prelude + 3 loops x 2 + 1 coda, LoRA rank 4, width 32
    assert Layout.from_metadata(meta) == Layout(loops=3, layers_per_block=2, prelude_layers=1, coda_layers=1,
                                                lora_rank=4)
    assert meta["source_layers"] == "8" and meta["d_model"] == "32" and meta["vocab"] == "49152"
    df = t.to_pandas()
    N = 3
    for c in ["request_id", "position", "prompt_len", "exit_loop", "token", "teacher_token"] + \
            [f"pred_{k}" for k in range(1, N + 1)]:
        assert df[c].dtype == np.int64, c
    for k in range(1, N + 1):
        assert df[f"conf_{k}"].dtype == np.float64 and df[f"correct_{k}"].dtype == bool
        assert ((df[f"conf_{k}"] >= 0) & (df[f"conf_{k}"] <= 1)).all()
        assert (df[f"margin_{k}"] >= 0).all() and (df[f"entropy_{k}"] >= -1e-6).all()
    assert df.request_id.nunique() == 5
    for _, g in df.groupby("request_id"):
        assert g.position.tolist() == list(range(len(g)))
        assert g.prompt_len.nunique() == 1 and len(g) <= 7
    assert (recorded["path"].with_suffix(".md")).exists()


def test_exit_loop_consistent_with_predictions(recorded):
    df = pq.read_table(recorded["path"]).to_pandas()
    N = 3
    preds = df[[f"pred_{k}" for k in range(1, N + 1)]].to_numpy()
    assert (df.token == df[f"pred_{N}"]).all()  # generation continues with the final loop
    for row, e in zip(preds, df.exit_loop):
        assert 1 <= e <= N
        assert row[e - 1] == row[-1] and all(row[k] != row[-1] for k in range(e - 1))
    for k in range(1, N + 1):
        assert (df[f"correct_{k}"] == (df[f"pred_{k}"] == df[f"pred_{N}"])).all()


def test_teacher_token_is_original_models_greedy_choice(recorded, tiny_dir):
    """teacher_token at position p = the original's argmax given the same prefix."""
    from traces.base_model import load_base
    from traces.generate import chat_ids
    from traces.prompts import load_prompts
    from traces.recursive import original_from_hf
    hf, tok = load_base(str(tiny_dir))
    teacher = original_from_hf(hf)
    df = pq.read_table(recorded["path"]).to_pandas()
    prompts = {p["id"]: p["prompt"] for p in load_prompts("heldout")}
    rid = df.request_id.iloc[0]
    g = df[df.request_id == rid]
    ids = chat_ids(tok, prompts[rid]) + g.token.tolist()
    with torch.no_grad():
        top = teacher(torch.tensor([ids]))[-1][0].argmax(-1)
    P = g.prompt_len.iloc[0]
    assert top[P - 1:P - 1 + len(g)].tolist() == g.teacher_token.tolist()


def test_round_trip_through_sim_loader(recorded):
    try:
        from sim.trace import load_trace
    except ImportError as e:
        pytest.skip(f"sim.trace not available yet: {e}")
    tr = load_trace(recorded["path"])
    df = pq.read_table(recorded["path"]).to_pandas()
    assert tr.num_loops == 3 and tr.num_tokens == len(df)
    assert tr.exit_loop.tolist() == df.sort_values(["request_id", "position"]).exit_loop.tolist()
    assert tr.conf is not None and tr.conf.shape == (len(df), 3)
    assert tr.correct is not None and tr.correct[:, -1].all()


def test_freeze_shared_trains_only_lora_norms_and_unique_layers(tiny_dir, tmp_path, monkeypatch):
    """freeze_shared=true (with bf16 autocast, the GPU setting, run here on the CPU): the
    shared block's base weights stay as converted, everything else moves."""
    from traces.base_model import load_base
    from traces.recursive import convert, load_model
    from traces.uptrain import train
    monkeypatch.setenv("RRTSIM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    train(_cfg("uptrain", [f"source={tiny_dir}", f"out_dir={run}", "name=frozen", "num_loops=3", "prelude_layers=1",
                           "coda_layers=1", "lora_rank=4", "max_steps=2", "eval_every=0", "eval_prompts=2",
                           "eval_max_new=4", "refresh_every=0", "min_pool_tokens=20", "seq_len=16",
                           "batch=2", "lr=1e-2", "freeze_shared=true", "amp=true"]))
    hf, _ = load_base(str(tiny_dir))
    model, _ = load_model(run / "last.pt", hf)
    fresh = convert(hf, model.spec)
    shared = {app.core for app in model.apps if app.loop is not None}
    for i, (core, core0) in enumerate(zip(model.cores, fresh.cores)):
        unchanged = all(torch.equal(core.w[n], core0.w[n]) for n in core.w)
        assert unchanged == (i in shared), i
    looped = [(a, a0) for a, a0 in zip(model.apps, fresh.apps) if a.loop is not None]
    assert all(not torch.equal(a.loras["q"].B, a0.loras["q"].B) for a, a0 in looped)


def test_card_threshold_table_matches_the_simulators_confidence_exit(recorded):
    from sim.exit_policy import ConfidenceExitConfig
    from sim.exit_policy import apply_exit_policy
    from sim.trace import load_trace
    from traces.stats import threshold_table
    df = pq.read_table(recorded["path"]).to_pandas().sort_values(["request_id", "position"])
    trace = load_trace(recorded["path"])
    curve = threshold_table(df, [0.0, 0.3, 0.6, 1.01])
    for t, row in zip([0.0, 0.3, 0.6, 1.01], curve.itertuples()):
        exits, wrong = apply_exit_policy(trace, ConfidenceExitConfig(threshold=t), 3)
        assert row.mean_exit_loop == pytest.approx(exits.mean())
        assert row.agree_final == pytest.approx(1 - wrong.mean())
    assert curve.mean_exit_loop.iloc[0] == 1.0 and curve.mean_exit_loop.iloc[3] == 3.0
    assert curve.agree_final.iloc[3] == 1.0 and curve.policy.iloc[-1] == "oracle"
    assert "## Confidence exit" in recorded["path"].with_suffix(".md").read_text()


def test_card_renders_from_the_trace_alone_without_its_checkpoint(recorded, tiny_dir, tmp_path):
    """traces.card must not need the (never committed) checkpoint: the run's config, counters
    and learning curve travel in the trace's metadata."""
    import shutil

    from traces.card import main as card
    trace = tmp_path / "moved.parquet"
    shutil.copy(recorded["path"], trace)
    shutil.move(recorded["run"], tmp_path / "gone")  # the checkpoint and its curve.csv vanish
    try:
        card([str(trace), "--source", str(tiny_dir)])
    finally:
        shutil.move(tmp_path / "gone", recorded["run"])
    text = trace.with_suffix(".md").read_text()
    assert "## Learning curve" in text and "| 4 |" in text  # the curve's last eval step
    assert "not recorded in this trace" not in text  # the wall clock came from the metadata


def test_record_refuses_to_overwrite_a_trace_unless_asked(recorded, tiny_dir):
    from traces.record import run as record
    cfg = _cfg("record", [f"checkpoint={recorded['run'] / 'best.pt'}", f"source={tiny_dir}", "name=tiny",
                          f"out_dir={recorded['path'].parent}", "num_prompts=1"])
    from sim.errors import ConfigError
    with pytest.raises(ConfigError, match="overwrite=true"):  # the CLI prints it as one line, exit 2
        record(cfg)


def test_kd_losses_equal_torch_kl_div_and_self_distillation_vanishes_on_agreement():
    import torch.nn.functional as F

    from traces.uptrain import kd_losses, self_distill_losses
    torch.manual_seed(0)
    teacher = torch.randn(2, 5, 50)
    outs = [torch.randn(2, 5, 50) for _ in range(2)]
    ref = [F.kl_div(F.log_softmax(o, -1).reshape(-1, 50), F.log_softmax(teacher, -1).reshape(-1, 50),
                    log_target=True, reduction="batchmean") for o in outs]
    assert torch.allclose(torch.stack(kd_losses(outs, teacher)), torch.stack(ref), atol=1e-5)
    same = [outs[1].clone(), outs[1]]
    assert self_distill_losses(same)[0].abs() < 1e-5
    assert self_distill_losses(outs)[0] > 0.1


def test_lr_warms_up_stays_then_decays_to_zero_over_the_last_decay_tokens():
    from traces.uptrain import lr_at
    cfg = _cfg("uptrain", ["lr=1e-3", "warmup_steps=10", "max_tokens=10000", "decay_tokens=4000"])
    assert lr_at(cfg, 0, 0) == pytest.approx(1e-4)
    assert lr_at(cfg, 50, 6000) == pytest.approx(1e-3)       # stable until the decay starts
    assert lr_at(cfg, 60, 8000) == pytest.approx(0.5e-3)     # halfway through the decay
    assert lr_at(cfg, 70, 10000) == 0.0
    plain = _cfg("uptrain", ["lr=1e-3", "warmup_steps=10", "max_tokens=10000"])
    assert lr_at(plain, 70, 10000) == pytest.approx(1e-3)    # decay_tokens=0: no decay
