"""Several rows of one request in one step (depthwise_spec's contract, sim/step.py): each row
attends its own loop's KV, drafting rows read a draft, a row entering loop 1 takes the latest
known token, and discarded rows leave nothing that a later row reads."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from .spec_driver import drive_depthwise_spec  # noqa: E402
from .test_executor import LOOPS, VOCAB, make_cfg, reference  # noqa: E402


@pytest.fixture(scope="module")
def recursive():
    from traces.recursive import RecursiveSpec, convert

    from .conftest import tiny_model
    return convert(tiny_model(vocab=VOCAB), RecursiveSpec(LOOPS, 1, 1, "average", 4)).eval()


@pytest.fixture(scope="module")
def packed(recursive):
    from traces.serving.weights import PackedModel
    return PackedModel(recursive, torch.float32)


def requests(seed: int, n: int = 5):
    rng = np.random.default_rng(seed)
    P = rng.integers(2, 9, size=n)
    G = rng.integers(3, 9, size=n)
    return P, G, [rng.integers(0, VOCAB, size=p + g) for p, g in zip(P, G)]


@pytest.mark.parametrize("draft_loops", [1, 2])
def test_spec_rows_match_token_by_token(recursive, packed, draft_loops):
    """Teacher-forced, any acceptance pattern is a valid schedule: every final head equals the
    unbatched reference, whatever was drafted, discarded and re-run before it. With d = N - 1 a
    draft's coda reads the previous position's final pass (both in one step), so drafts equal
    the reference's loop-d exit too."""
    from traces.serving.clock import RealSteps
    P, G, seqs = requests(seed=11)
    rng = np.random.default_rng(0)
    coin = {}
    rs = RealSteps(packed, 3, P, seqs, record=True)
    stats = drive_depthwise_spec(rs, G, 3, LOOPS, draft_loops,
                                 accept=lambda r, p: coin.setdefault((r, p), bool(rng.random() < 0.6)))
    assert stats["max_rows_per_slot"] >= 2 and stats["discarded"] > 0 and stats["accepted"] > 0
    refs = {r: reference(recursive, torch.as_tensor(seqs[r]), int(P[r]), [LOOPS] * int(G[r]), "ignore")
            for r in range(len(seqs))}
    finals = drafts = 0
    for rec in rs.records:
        for i, r in enumerate(rec["requests"]):
            p, k, leaving = int(rec["positions"][i]), int(rec["loops"][i]), bool(rec["leaving"][i])
            if leaving or draft_loops == LOOPS - 1:
                torch.testing.assert_close(rec["logits"][i], refs[r][(p, k, leaving)], atol=2e-5, rtol=1e-4)
                finals += leaving
                drafts += not leaving
    assert finals == int(G.sum())  # each position leaves once: discarded rows never reach loop N
    if draft_loops == LOOPS - 1:  # every position but the last drafted at least once
        assert drafts >= int((G - 1).sum())


def test_spec_free_running_equals_full_depth_greedy(packed):
    """Free-running with the clock verifying its own drafts (scheduler.accept=live) emits
    exactly full-depth greedy decoding (continuous, exit=none, through the engine)."""
    import pandas as pd

    from sim.trace import trace_from_frame
    from traces.execute import run_real
    from traces.serving.clock import RealSteps
    P, G, seqs = requests(seed=12, n=6)
    rs = RealSteps(packed, 3, P, seqs, free_running=True, accept_live=True)
    assert rs.decides_acceptance
    stats = drive_depthwise_spec(rs, G, 3, LOOPS, 1)
    assert stats["rejected"] > 0 and stats["accepted"] > 0 and stats["max_rows_per_slot"] == LOOPS
    frame = pd.DataFrame([(r, j, int(P[r]), LOOPS) for r in range(len(P)) for j in range(int(G[r]))],
                         columns=["request_id", "position", "prompt_len", "exit_loop"])
    cfg = make_cfg("continuous", 3, policy="none", checks=False)
    ref = run_real(cfg, packed, None, warm=False, trace=trace_from_frame(frame, "<test>", LOOPS),
                   free_running=True, sequences=seqs).generated
    r, p, t = rs.generated()
    assert len(ref) == int(G.sum()) == len(t)
    assert (ref.request_id.to_numpy() == r).all() and (ref.position.to_numpy() == p).all()
    assert (ref.token.to_numpy() == t).all()
    # free-running really feeds the model's own tokens: they are not the (random) given continuation
    given = np.concatenate([s[pl:] for s, pl in zip(seqs, P)])
    assert (given != t).mean() > 0.5


@pytest.mark.parametrize("kv_policy", ["ignore", "propagate", "share"])
def test_free_running_live_exits_feed_their_own_tokens(recursive, packed, kv_policy):
    """exit=live free_running=true: a token leaves at its first confident loop, the emitted token
    is that loop's prediction, and the next position consumes it. Checked against the unbatched
    reference run teacher-forced on the emitted text with the same exits, under each KV policy."""
    from traces.execute import run_real

    from .test_executor import _workload, make_trace
    trace = make_trace(seed=7, n_req=5)
    cfg = make_cfg("depthwise", 3, policy="live", kv=kv_policy)
    wl = _workload(cfg, trace)
    rng = np.random.default_rng(3)
    seqs = [rng.integers(0, VOCAB, size=int(p + g)) for p, g in zip(wl.prompt_len, wl.gen_len)]
    cfg.exit.threshold = 1.0
    probe = run_real(cfg, packed, None, warm=False, trace=trace, free_running=True, sequences=seqs)
    cfg.exit.threshold = float(np.median(probe.exits.live_conf))
    res = run_real(cfg, packed, None, warm=False, trace=trace, free_running=True, sequences=seqs, record=True)
    gen, ex = res.generated, res.exits
    assert len(gen) == wl.num_tokens and 1 < ex.live_exit.mean() < LOOPS
    assert (gen.token.to_numpy() == ex.live_top1.to_numpy()).all()  # both sorted by request, position
    if kv_policy == "propagate":
        assert res.steps.kv_proj_layers.sum() > 0
    for r, g in ex.groupby("request"):
        P = int(wl.prompt_len[r])
        text = np.concatenate([seqs[r][:P], gen[gen.request_id == r].token.to_numpy()])
        exits = g.live_exit.tolist()
        ref = reference(recursive, torch.as_tensor(text), P, exits, kv_policy)
        for rec in res.records:
            for i in np.flatnonzero(rec["requests"] == r):
                p, k = int(rec["positions"][i]), int(rec["loops"][i])
                torch.testing.assert_close(rec["logits"][i], ref[(p, k, k == exits[p])], atol=2e-5, rtol=1e-4)
        for p, e in enumerate(exits):
            assert int(ref[(p, e, True)].argmax()) == int(text[P + p])  # the exit loop's prediction is emitted
