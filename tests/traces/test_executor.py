"""The real backend: batched mixed-loop steps compute what the model computes token by
token, and an executed run makes exactly the simulation's scheduling decisions."""
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sim.config import ModelConfig, RunConfig, validate  # noqa: E402
from sim.simulation import simulate  # noqa: E402
from sim.trace import trace_from_frame  # noqa: E402

from .conftest import tiny_model  # noqa: E402

LOOPS = 3
VOCAB = 512  # small: the head over the real 49k vocabulary would dominate the test time


def tiny_layout() -> ModelConfig:
    """The layout of the tiny test model converted with RecursiveSpec(3, 1, 1, rank 4)."""
    return ModelConfig(name="tiny_r3", source_layers=8, loops=LOOPS, layers_per_block=2, prelude_layers=1,
                       coda_layers=1, d_model=32, n_heads=4, n_kv_heads=2, head_dim=8, d_mlp=48,
                       vocab=VOCAB, lora_rank=4)


@pytest.fixture(scope="module")
def recursive():
    from traces.recursive import RecursiveSpec, convert
    return convert(tiny_model(vocab=VOCAB), RecursiveSpec(LOOPS, 1, 1, "average", 4)).eval()


@pytest.fixture(scope="module")
def packed(recursive):
    from traces.serving.weights import PackedModel
    return PackedModel(recursive, torch.float32)


def make_cfg(scheduler: str, batch: int, policy: str = "oracle", kv: str = "ignore", checks: bool = True):
    cfg = RunConfig()
    cfg.progress = False
    cfg.scheduler.name, cfg.scheduler.batch_size = scheduler, batch
    cfg.exit.policy, cfg.exit.kv_policy, cfg.exit.head_every_loop = policy, kv, checks
    cfg.cost.kind = "constant"
    cfg.memory.limit = False
    cfg.model = tiny_layout()
    return validate(cfg)


def make_trace(seed: int = 0, n_req: int = 5):
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_req):
        P = int(rng.integers(2, 7))
        for j in range(int(rng.integers(2, 7))):
            rows.append((r, j, P, int(rng.integers(1, LOOPS + 1))))
    import pandas as pd
    frame = pd.DataFrame(rows, columns=["request_id", "position", "prompt_len", "exit_loop"])
    return trace_from_frame(frame, "<test>", LOOPS)


def executed(cfg, trace, packed):
    """A real run of `cfg` on `trace` with head logits recorded, and its sequences."""
    from traces.execute import run_real
    from traces.serving.inputs import request_sequences

    res = run_real(cfg, packed, None, log_emits=True, record=True, warm=False, trace=trace)
    sim = simulate(cfg, trace=trace, log_emits=True)
    wl_seqs = request_sequences(trace, _workload(cfg, trace), None, packed.dims.vocab, cfg.seed)
    return res, sim, wl_seqs


def _workload(cfg, trace):
    from sim.config import ExitConfig
    from sim.exit_policy import apply_exit_policy
    from sim.registry import scheduler_registry
    from sim.workload import build_workload
    honours = scheduler_registry.get(cfg.scheduler.name).impl.honours_exits
    ex = cfg.exit if honours else ExitConfig("none", cfg.exit.kv_policy, cfg.exit.head_every_loop)
    exits, wrong = apply_exit_policy(trace, ex, cfg.model.loops)
    return build_workload(trace, exits, wrong, cfg.model.loops, cfg.workload, cfg.seed)


# -- an independent, unbatched reference: one token at a time, one dict of KV per application ---------
def _ref_layer(model, i, x, pos, kv, read, write):
    from traces.llama import apply_rope, mlp, rms_norm, rope_tables
    app, d = model.apps[i], model.dims
    lin = model._lin(app)
    h = rms_norm(x, app.norm_in, d.eps)
    cos, sin = rope_tables(torch.tensor([[pos]]), d.head_dim, d.rope_theta, x.dtype)
    q = apply_rope(lin("q", h).view(1, 1, d.heads, d.head_dim).transpose(1, 2), cos, sin)[0, :, 0]
    k = apply_rope(lin("k", h).view(1, 1, d.kv_heads, d.head_dim).transpose(1, 2), cos, sin)[0, :, 0]
    v = lin("v", h).view(d.kv_heads, d.head_dim)
    if write:
        kv.setdefault(i, {})[pos] = (k, v)
    seen = sorted(kv[read].items())  # only positions whose token ran this application hold KV
    K = torch.stack([kk for _, (kk, _) in seen]).repeat_interleave(d.heads // d.kv_heads, dim=1)
    V = torch.stack([vv for _, (_, vv) in seen]).repeat_interleave(d.heads // d.kv_heads, dim=1)
    p = torch.softmax(torch.einsum("hd,thd->ht", q, K) / d.head_dim ** 0.5, -1)
    x = x + lin("o", torch.einsum("ht,thd->hd", p, V).reshape(1, -1))
    return x + mlp(rms_norm(x, app.norm_post, d.eps), lin)


@torch.no_grad()
def reference(model, seq, P, exits, kv_policy):
    """{(position, loop): logits} of one request run token by token: prompt (minus its last
    token) through every application, then each generated position up to its exit loop;
    after every loop an exit check: coda (writing its KV: the exit's pass, last, is what
    later positions read), final norm and head."""
    pre, tail = model.spec.prelude_layers, model.spec.coda_layers
    K = (len(model.apps) - pre - tail) // model.spec.num_loops
    kv, out = {}, {}

    def run(x, pos, loop_range):
        for i in range(pre):
            x = _ref_layer(model, i, x, pos, kv, i, True)
        for k in loop_range:
            for j in range(K):
                i = pre + k * K + j
                shared = kv_policy == "share" and k > 0
                x = _ref_layer(model, i, x, pos, kv, pre + j if shared else i, not shared)
            yield k, x

    for t in range(P - 1):
        x = model.embed[seq[t]][None]
        *_, (_, x) = run(x, t, range(model.spec.num_loops))
        for i in range(len(model.apps) - tail, len(model.apps)):
            x = _ref_layer(model, i, x, t, kv, i, True)
    for p, e in enumerate(exits):
        pos = P - 1 + p
        for k, x in run(model.embed[seq[pos]][None], pos, range(e)):
            if k + 1 == e and kv_policy == "propagate":
                _propagate(model, x, pos, kv, e, pre, K)
            for i in range(len(model.apps) - tail, len(model.apps)):
                x = _ref_layer(model, i, x, pos, kv, i, True)
            out[(p, k + 1, k + 1 == e)] = model.logits(x)[0]
    return out


def _propagate(model, x, pos, kv, e, pre, K):
    """CALM's state propagation: the hidden state after exit loop e through every skipped
    application's own input norm and K/V projections, as that application's KV at pos."""
    from traces.llama import apply_rope, rms_norm, rope_tables
    d = model.dims
    cos, sin = rope_tables(torch.tensor([[pos]]), d.head_dim, d.rope_theta, x.dtype)
    for k in range(e, model.spec.num_loops):
        for j in range(K):
            i = pre + k * K + j
            app, lin = model.apps[i], model._lin(model.apps[i])
            h = rms_norm(x, app.norm_in, d.eps)
            kk = apply_rope(lin("k", h).view(1, 1, d.kv_heads, d.head_dim).transpose(1, 2), cos, sin)[0, :, 0]
            kv.setdefault(i, {})[pos] = (kk, lin("v", h).view(d.kv_heads, d.head_dim))


def _compare(res, trace, wl, seqs, recursive, kv_policy):
    refs = {}
    checked = 0
    for rec in res.records:
        for i, r in enumerate(rec["requests"]):
            if r not in refs:
                a, b = wl.offsets[r], wl.offsets[r + 1]
                refs[r] = reference(recursive, torch.as_tensor(seqs[r]), int(wl.prompt_len[r]),
                                    wl.exit_loop[a:b].tolist(), kv_policy)
            key = (int(rec["positions"][i]), int(rec["loops"][i]), bool(rec["leaving"][i]))
            torch.testing.assert_close(rec["logits"][i], refs[r][key], atol=2e-5, rtol=1e-4)
            checked += 1
    return checked


@pytest.mark.parametrize("kv_policy", ["ignore", "propagate", "share"])
def test_mixed_loop_steps_match_token_by_token(recursive, packed, kv_policy):
    """Depth-wise batching puts tokens of different loops (and a prefill) in one step; every
    head the executor evaluates equals the unbatched reference's."""
    trace = make_trace(seed=1)
    cfg = make_cfg("depthwise", 3, kv=kv_policy)
    res, sim, seqs = executed(cfg, trace, packed)
    wl = _workload(cfg, trace)
    assert any(len(set(rec["loops"].tolist())) > 1 for rec in res.records), "no step mixed loops"
    assert (res.steps.kv_proj_layers.sum() > 0) == (kv_policy == "propagate")
    assert _compare(res, trace, wl, seqs, recursive, kv_policy) == int(wl.exit_loop.astype(int).sum())


def test_lockstep_final_logits_equal_full_forward(recursive, packed):
    """Without exits (continuous), every emitted token's logits are the original full-sequence
    forward's (plain causal attention, no caches): prefill, caches and positions are right."""
    trace = make_trace(seed=2)
    cfg = make_cfg("continuous", 2)
    res, sim, seqs = executed(cfg, trace, packed)
    wl = _workload(cfg, trace)
    n = 0
    with torch.no_grad():
        full = {r: recursive(torch.as_tensor(s)[None])[-1][0] for r, s in enumerate(seqs)}
        for rec in res.records:
            for i, r in enumerate(rec["requests"]):
                P, p = int(wl.prompt_len[r]), int(rec["positions"][i])
                torch.testing.assert_close(rec["logits"][i], full[r][P - 1 + p], atol=2e-5, rtol=1e-4)
                n += 1
    assert n == wl.num_tokens


@pytest.mark.parametrize("scheduler", ["static", "continuous", "sync_exit", "depthwise"])
def test_executed_run_emits_what_the_simulation_emits(packed, scheduler):
    trace = make_trace(seed=3, n_req=6)
    cfg = make_cfg(scheduler, 3)
    res, sim, _ = executed(cfg, trace, packed)
    real = [sorted(zip(r.tolist(), p.tolist())) for r, p, _ in res.emit_log]
    simulated = [sorted(zip(r.tolist(), p.tolist())) for r, p, _ in sim.emit_log]
    assert real == simulated
    assert res.metrics["loop_steps"] == sim.metrics["loop_steps"] == len(res.steps)
    assert res.metrics["backend"] == "real"
    assert res.metrics["makespan_s"] == pytest.approx(res.steps.seconds.sum())
    # the per-step log holds the loads the simulator priced, step for step
    from sim.cost_profiled import LOAD_COLUMNS
    assert (res.steps[list(LOAD_COLUMNS)].to_numpy() >= 0).all()
    assert res.steps.tokens.sum() == round(sim.metrics["mean_exit_loop"] * sim.metrics["num_tokens"])


@pytest.mark.slow
def test_bf16_step_close_to_fp32(recursive):
    from traces.serving.weights import PackedModel
    trace = make_trace(seed=4)
    cfg = make_cfg("depthwise", 3)
    r32, _, _ = executed(cfg, trace, PackedModel(recursive, torch.float32))
    r16, _, _ = executed(cfg, trace, PackedModel(recursive, torch.bfloat16))
    a = torch.cat([r["logits"] for r in r32.records])
    b = torch.cat([r["logits"] for r in r16.records])
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9
    assert (a - b).abs().max() < 0.1 * a.abs().max()


def test_unsupported_kv_policy_is_a_config_error(packed):
    from sim.errors import ConfigError
    from traces.serving.clock import RealSteps
    with pytest.raises(ConfigError, match="recompute.*not executed for real"):
        RealSteps(packed, 2, np.array([3]), [np.arange(5)], "recompute")


def test_execute_without_torch_says_install_cpu_torch_first():
    code = ("import sys; sys.modules['torch'] = None; from traces.execute import main; "
            "sys.exit(main(['scheduler=depthwise']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0
    assert p.stderr.index("pip install torch==2.13.0") < p.stderr.index("pip install -e '.[traces]'")


def _live(packed, scheduler: str, threshold: float, seed: int = 5):
    from traces.execute import run_real
    trace = make_trace(seed=seed, n_req=6)
    cfg = make_cfg(scheduler, 3, policy="live")
    cfg.exit.threshold = threshold
    res = run_real(cfg, packed, None, log_emits=True, warm=False, trace=trace)
    return res, trace, cfg


@pytest.mark.parametrize("scheduler", ["sync_exit", "depthwise"])
def test_live_exits_are_the_first_confident_loop(recursive, packed, scheduler):
    """exit=live: each token leaves at the first loop whose real confidence (coda, norm, head)
    reaches the threshold, as an unbatched reference run with those same exits confirms;
    every token is emitted once and the run's metrics count the live exits."""
    from traces.serving.inputs import request_sequences
    probe, trace, cfg = _live(packed, scheduler, 1.0)  # (almost) never confident: all loops
    assert (probe.exits.live_exit == LOOPS).mean() > 0.9
    threshold = float(np.median(probe.exits.live_conf))  # the last loop's: some exit earlier, some not
    res, trace, cfg = _live(packed, scheduler, threshold)
    ex = res.exits
    assert len(ex) == res.metrics["num_tokens"] and not ex.duplicated(["request", "position"]).any()
    assert 1 < res.metrics["mean_exit_loop"] < LOOPS
    assert res.metrics["mean_exit_loop"] == pytest.approx(ex.live_exit.mean())
    wl = _workload(cfg, trace)
    seqs = request_sequences(trace, wl, None, packed.dims.vocab, cfg.seed)
    for r, g in ex.groupby("request"):
        exits = g.sort_values("position").live_exit.tolist()
        ref = reference(recursive, torch.as_tensor(seqs[r]), int(wl.prompt_len[r]), exits, "ignore")
        for p, e in enumerate(exits):
            conf = [torch.softmax(ref[(p, k, k == e)].double(), -1).max().item() for k in range(1, e + 1)]
            assert all(c < threshold for c in conf[:-1]), (r, p, conf)
            assert e == LOOPS or conf[-1] >= threshold, (r, p, conf)


def test_live_exit_needs_the_real_model():
    from sim.errors import ConfigError
    cfg = make_cfg("depthwise", 3, policy="live")
    with pytest.raises(ConfigError, match="traces.execute exit=live"):
        simulate(cfg, trace=make_trace(seed=6))
