"""Conversion: our forward equals HF's; full-rank relaxed models are exact."""
import pytest

torch = pytest.importorskip("torch")

from tests.traces.conftest import tiny_model  # noqa: E402
from traces.generate import decode, greedy  # noqa: E402
from traces.recursive import RecursiveSpec, convert, original_from_hf  # noqa: E402

SPECS = [RecursiveSpec(2, 0, 0, "average", 10 ** 6), RecursiveSpec(2, 1, 1, "stepwise", 10 ** 6),
         RecursiveSpec(3, 1, 2, "lower", 10 ** 6), RecursiveSpec(3, 0, 0, "average", 10 ** 6),
         RecursiveSpec(2, 2, 2, "average", 10 ** 6)]


@pytest.fixture(scope="module")
def hf():
    return tiny_model(vocab=101, layers=6)


def test_original_matches_hf(hf):
    ids = torch.randint(0, 101, (2, 13))
    with torch.no_grad():
        ours = original_from_hf(hf)(ids)[-1]
        ref = hf(ids).logits
    assert (ours - ref).abs().max() < 1e-5


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.num_loops}L-p{s.prelude_layers}c{s.coda_layers}-{s.init}")
def test_full_rank_recovers_original(hf, spec):
    ids = torch.randint(0, 101, (2, 13))
    with torch.no_grad():
        model = convert(hf, spec)
        outs = model(ids)
        ref = hf(ids).logits
    assert len(outs) == spec.num_loops
    err = (outs[-1] - ref).abs().max().item()
    assert err < 1e-4, err


def test_low_rank_is_not_exact_and_zero_rank_ties_weights(hf):
    ids = torch.randint(0, 101, (1, 9))
    with torch.no_grad():
        ref = hf(ids).logits
        low = convert(hf, RecursiveSpec(2, 0, 0, "average", 2))(ids)[-1]
        strict = convert(hf, RecursiveSpec(2, 0, 0, "average", 0))
    assert (low - ref).abs().max() > 1e-3
    assert len(strict.cores) == 3 and len(strict.apps) == 6  # 3 shared layers, 2 loops
    assert all(len(a.loras) == 0 for a in strict.apps)


def test_exit_after_each_loop_uses_final_norm_and_tied_head(hf):
    spec = RecursiveSpec(3, 0, 0, "average", 4)
    model = convert(hf, spec)
    ids = torch.randint(0, 101, (1, 5))
    with torch.no_grad():
        hs = model.hidden_states(ids)
        outs = model(ids)
    assert model.exits == [1, 3, 5]
    for h, o in zip(hs, outs):
        assert torch.allclose(model.logits(h), o)


def test_intermediate_exit_runs_the_tail_layers_then_norm_and_head(hf):
    """The one exit semantics (traces/recursive.py docstring): leaving after loop k runs
    the unique tail layers, the final norm and the head, not the head straight away."""
    from traces.llama import decoder_layer, rope_tables
    model = convert(hf, RecursiveSpec(3, 1, 2, "average", 3))  # 1 + 3x1 + 2 layers
    assert model.coda_apps == [len(model.apps) - 2, len(model.apps) - 1]
    ids = torch.randint(0, 101, (1, 7))
    with torch.no_grad():
        outs = model(ids)
        x = model.embed[ids]
        cos, sin = rope_tables(torch.arange(7)[None], model.dims.head_dim, model.dims.rope_theta, x.dtype)
        for i in list(range(model.exits[0] + 1)) + model.coda_apps:
            if i == model.coda_apps[0]:
                no_tail = model.logits(x)  # the old reading: head right after loop 1
            a = model.apps[i]
            x = decoder_layer(x, model._lin(a), a.norm_in, a.norm_post, model.dims, cos, sin, None, None)
    assert torch.allclose(outs[0], model.logits(x), atol=1e-5)
    assert (outs[0] - no_tail).abs().max() > 1e-3


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("T", [1, 5])
def test_masked_attention_matches_sdpa(dtype, atol, T):
    """The decode path's attention (traces/llama.py masked_attention, two matmuls) must be
    SDPA's: grouped heads (query head h reads KV head h // 3), a padding mask, fp32 scores."""
    import torch.nn.functional as F
    from traces.llama import build_mask, masked_attention
    g = torch.Generator().manual_seed(0)
    B, H, KV, D, Tk = 3, 6, 2, 16, 11
    q = (torch.randn(B, H, T, D, generator=g) * 3).to(dtype)
    k = (torch.randn(B, KV, Tk, D, generator=g) * 3).to(dtype)
    v = torch.randn(B, KV, Tk, D, generator=g).to(dtype)
    valid = torch.ones(B, Tk, dtype=torch.bool)
    valid[1, :4] = False  # a left-padded row
    valid[2, 6] = False   # a hole (a row that had stopped)
    mask = build_mask(valid, T)
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask,
                                         enable_gqa=True)
    out = masked_attention(q, k, v, mask)
    assert out.dtype == dtype and out.shape == (B, H, T, D)
    assert (out.double() - ref).abs().max() < atol


def test_layout_validation():
    with pytest.raises(ValueError):
        RecursiveSpec(3, 1, 1).block_size(30)  # 28 not divisible by 3
    assert RecursiveSpec(3, 1, 2).block_size(30) == 9
    assert RecursiveSpec(2, 1, 1).describe(30) == "1 unique + 2x14 shared + 1 unique"


def test_incremental_decoding_with_padding_matches_full_forward(hf):
    """KV-cached, left-padded decoding gives the same logits as a full pass."""
    model = convert(hf, RecursiveSpec(2, 1, 1, "average", 3)).eval()
    torch.manual_seed(1)
    a, b = torch.randint(3, 101, (9,)).tolist(), torch.randint(3, 101, (4,)).tolist()
    seen = []
    decode([model], [a, b], greedy, 6, stops=set(), pad_id=0,
           on_step=lambda v: seen.append([l.clone() for l in v.logits[0]]))
    res = decode([model], [a, b], greedy, 6, stops=set(), pad_id=0)
    for row, prompt in enumerate([a, b]):
        full = torch.tensor([prompt + res.tokens[row]])
        with torch.no_grad():
            outs = model(full)
        for step in range(6):
            for k in range(2):
                want = outs[k][0, len(prompt) - 1 + step]
                assert torch.allclose(seen[step][k][row], want, atol=1e-4)


def test_greedy_decode_matches_hf_generate(hf):
    model = original_from_hf(hf)
    prompt = [5, 17, 42, 8, 99]
    res = decode([model], [prompt], greedy, 8, stops=set(), pad_id=0)
    ref = hf.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False,
                      attention_mask=torch.ones(1, 5, dtype=torch.long), pad_token_id=0)
    assert res.tokens[0] == ref[0, 5:].tolist()
