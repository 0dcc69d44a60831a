"""Conversion of a Llama-family model into a (relaxed) Recursive Transformer.

Layout (CYCLE order, `sim.layout.Layout`, the simulator's vocabulary):
``prelude_layers`` unique first layers, then one shared block of K layers run
``num_loops`` times, then ``coda_layers`` unique last layers. prelude = coda = 0
is the paper's plain CYCLE; prelude, coda > 0 is "middle-cycle" (the previous probe
found keeping the first and last layers unique is what makes SmolLM2-135M
learnable on a CPU budget).

Each *application* of a shared layer (loop i, block position j) keeps its own
RMSNorm weights (copied from the original layer it replaces: averaged norms
make even full-rank LoRA inexact) and, in the relaxed variant, its own LoRA on
every linear layer, initialised by truncated SVD of W_original - W_shared
(B = U_r S_r, A = V_r^T): at full rank the original model is recovered.

Exits (one semantics across training, recording, the simulator's cost and the
real executor): a token leaving after loop k runs the unique coda layers (the
last ones), then the final norm and the tied LM head, as a served middle-cycle
model must; the last exit is the full model. In teacher-forced passes every
exit's coda attends to coda states computed from the same exit (as if all
tokens left there); each application, and each intermediate exit's coda, has
its own KV cache, so generation is exact per exit.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from sim.layout import Layout

from .llama import LlamaDims, build_mask, decoder_layer, rms_norm, rope_tables

LINEARS = ("q", "k", "v", "o", "gate", "up", "down")
_HF_NAMES = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
             "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
             "down": "mlp.down_proj"}


@dataclass
class RecursiveSpec:
    """How to convert: loops, unique prelude/coda layers, init, LoRA rank."""
    num_loops: int = 2
    prelude_layers: int = 1
    coda_layers: int = 1
    init: str = "average"      # stepwise | average | lower
    lora_rank: int = 64        # 0: strict (no LoRA); >= min(out,in): full rank

    @classmethod
    def from_dict(cls, d: dict) -> "RecursiveSpec":
        """A saved spec; checkpoints from before the shared vocabulary say head/tail."""
        d = dict(d)
        for old, new in (("head", "prelude_layers"), ("tail", "coda_layers")):
            if old in d:
                d[new] = d.pop(old)
        return cls(**d)

    def layout_of(self, num_layers: int) -> Layout:
        """The layout this spec gives a model of `num_layers` layers (ValueError if the
        layers left for the block do not divide into the loops)."""
        return Layout.split(num_layers, self.num_loops, self.prelude_layers, self.coda_layers, self.lora_rank)

    @property
    def kind(self) -> str:
        return "cycle" if self.prelude_layers == 0 and self.coda_layers == 0 else "middle_cycle"

    def block_size(self, num_layers: int) -> int:
        return self.layout_of(num_layers).layers_per_block

    def describe(self, num_layers: int) -> str:
        return self.layout_of(num_layers).describe()


class LayerCore(nn.Module):
    """The linear weights of one (possibly shared) decoder layer."""

    def __init__(self, weights: dict[str, torch.Tensor]):
        super().__init__()
        self.w = nn.ParameterDict({n: nn.Parameter(weights[n].clone()) for n in LINEARS})


class LoRA(nn.Module):
    """Low-rank delta B @ A added to one shared linear layer for one loop."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor):
        super().__init__()
        self.A = nn.Parameter(A.contiguous())  # (r, in)
        self.B = nn.Parameter(B.contiguous())  # (out, r)

    def forward(self, x):
        return (x @ self.A.t()) @ self.B.t()


class Application(nn.Module):
    """One use of a core in the unrolled stack: its own norms, optional LoRA."""

    def __init__(self, core: int, loop: int | None, orig_layer: int,
                 norm_in: torch.Tensor, norm_post: torch.Tensor,
                 loras: dict[str, LoRA] | None = None):
        super().__init__()
        self.core, self.loop, self.orig_layer = core, loop, orig_layer
        self.norm_in = nn.Parameter(norm_in.clone())
        self.norm_post = nn.Parameter(norm_post.clone())
        self.loras = nn.ModuleDict(loras or {})


def _svd_lora(residual: torch.Tensor, rank: int, svd: bool = True) -> LoRA:
    if not svd:  # shapes only (a checkpoint will overwrite the values)
        r = min(rank, *residual.shape)
        return LoRA(residual.new_zeros(r, residual.shape[1]), residual.new_zeros(residual.shape[0], r))
    U, S, Vh = torch.linalg.svd(residual.double(), full_matrices=False)
    r = min(rank, S.numel())
    return LoRA(Vh[:r].float(), (U[:, :r] * S[:r]).float())


class RecursiveLM(nn.Module):
    """Unrolled stack of applications over (shared) cores, with per-loop exits.

    Also represents the original model exactly (one loop, all layers unique),
    which is how the teacher runs in uptraining and recording.
    """

    def __init__(self, dims: LlamaDims, embed: torch.Tensor, final_norm: torch.Tensor,
                 cores: list[LayerCore], apps: list[Application], exits: list[int],
                 spec: RecursiveSpec | None = None, num_layers: int | None = None):
        super().__init__()
        self.dims = dims
        self.embed = nn.Parameter(embed, requires_grad=False)  # frozen, tied head
        self.final_norm = nn.Parameter(final_norm.clone())
        self.cores = nn.ModuleList(cores)
        self.apps = nn.ModuleList(apps)
        self.exits = list(exits)  # app index after which each exit is taken
        # unique layers after the last loop: every exit runs them (see module docstring)
        last_loop_end = max((i for i, a in enumerate(apps) if a.loop is not None), default=len(apps) - 1)
        self.coda_apps = list(range(last_loop_end + 1, len(apps))) if len(self.exits) > 1 else []
        self.spec = spec
        self.num_layers = num_layers

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    # -- forward ---------------------------------------------------------
    def _lin(self, app: Application):
        w = self.cores[app.core].w
        loras = app.loras

        def lin(name, x):
            y = x @ w[name].t()
            if name in loras:
                y = y + loras[name](x)
            return y
        return lin

    def hidden_states(self, input_ids, positions=None, caches=None, key_valid=None):
        """Run the stack; return the residual stream at each exit (list).

        Without caches/key_valid: plain causal attention over the whole
        sequence (training). With caches (one dict per application) and
        key_valid (B, T_past + T): incremental decoding with padding.
        """
        B, T = input_ids.shape
        if positions is None:
            positions = torch.arange(T, device=input_ids.device).expand(B, T)
        x = self.embed[input_ids]
        cos, sin = rope_tables(positions, self.dims.head_dim, self.dims.rope_theta, x.dtype)
        mask = None if key_valid is None else build_mask(key_valid, T)
        outs, early = [], self.exits[:-1]
        n_apps, n_coda = len(self.apps), len(self.coda_apps)
        for i, app in enumerate(self.apps):
            cache = None if caches is None else caches[i]
            x = decoder_layer(x, self._lin(app), app.norm_in, app.norm_post, self.dims,
                              cos, sin, cache, mask)
            if i in early:
                h = x
                for j, t in enumerate(self.coda_apps):  # the coda of a token leaving here
                    coda = self.apps[t]
                    c = None if caches is None else caches[n_apps + early.index(i) * n_coda + j]
                    h = decoder_layer(h, self._lin(coda), coda.norm_in, coda.norm_post, self.dims,
                                      cos, sin, c, mask)
                outs.append(h)
            elif i == self.exits[-1]:
                outs.append(x)
        return outs

    def logits(self, h):
        """Exit head: final norm + tied embedding matrix."""
        return rms_norm(h, self.final_norm, self.dims.eps) @ self.embed.t()

    def forward(self, input_ids, positions=None, caches=None, key_valid=None):
        """Logits at every exit: list of (B, T, vocab)."""
        return [self.logits(h) for h in
                self.hidden_states(input_ids, positions, caches, key_valid)]

    def new_caches(self):
        """One KV cache per application, then one per coda layer of each intermediate exit."""
        return [dict() for _ in range(len(self.apps) + (self.num_exits - 1) * len(self.coda_apps))]

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    # -- (de)serialisation of the structure ------------------------------
    def structure(self) -> dict:
        return {"dims": asdict(self.dims), "spec": asdict(self.spec) if self.spec else None,
                "num_layers": self.num_layers}


def _hf_layer_weights(layer) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    ws = {}
    for n, path in _HF_NAMES.items():
        mod = layer.get_submodule(path)
        if getattr(mod, "bias", None) is not None:
            raise NotImplementedError("linear biases are not supported")
        ws[n] = mod.weight.detach().float()
    return ws, layer.input_layernorm.weight.detach().float(), \
        layer.post_attention_layernorm.weight.detach().float()


def _hf_parts(hf_model):
    base = hf_model.model
    layers = [_hf_layer_weights(l) for l in base.layers]
    embed = base.embed_tokens.weight.detach().float()
    if not getattr(hf_model.config, "tie_word_embeddings", False):
        head = hf_model.lm_head.weight.detach().float()
        if not torch.equal(head, embed):
            raise NotImplementedError("untied LM heads are not supported")
    return LlamaDims.from_hf_config(hf_model.config), embed, base.norm.weight.detach().float(), layers


def original_from_hf(hf_model) -> RecursiveLM:
    """The original model, exactly, in our forward (one exit at the end)."""
    dims, embed, fnorm, layers = _hf_parts(hf_model)
    cores = [LayerCore(w) for w, _, _ in layers]
    apps = [Application(i, None, i, ni, npost) for i, (_, ni, npost) in enumerate(layers)]
    return RecursiveLM(dims, embed.clone(), fnorm, cores, apps, [len(apps) - 1],
                       None, len(layers))


def init_shared(weights: list[dict[str, torch.Tensor]], tied: list[list[int]],
                init: str) -> list[dict[str, torch.Tensor]]:
    """Initial shared block weights. ``tied[j]`` = original layers (in loop
    order) that block position j replaces; ``weights`` is indexed by original
    layer."""
    K, N = len(tied), len(tied[0])
    out = []
    for j in range(K):
        if init == "average":
            out.append({n: torch.stack([weights[l][n] for l in tied[j]]).mean(0) for n in LINEARS})
        elif init == "lower":
            out.append({n: weights[tied[j][0]][n] for n in LINEARS})
        elif init == "stepwise":
            # every N-th layer of the middle region, first and last kept
            mid = [l for t in zip(*tied) for l in t]  # middle layers in order
            idx = round(j * (len(mid) - 1) / max(K - 1, 1))
            out.append({n: weights[mid[idx]][n] for n in LINEARS})
        else:
            raise ValueError(f"unknown init {init!r}")
    return out


def convert(hf_model, spec: RecursiveSpec, svd: bool = True) -> RecursiveLM:
    """Build the relaxed recursive model from an HF Llama-family model.

    svd=False skips the (slow, ~40 s on one core) SVD and leaves LoRA zeroed:
    only for restoring a checkpoint."""
    dims, embed, fnorm, layers = _hf_parts(hf_model)
    L = len(layers)
    K = spec.block_size(L)
    w = [l[0] for l in layers]
    tied = [[spec.prelude_layers + i * K + j for i in range(spec.num_loops)] for j in range(K)]
    shared = init_shared(w, tied, spec.init)
    cores: list[LayerCore] = []
    apps: list[Application] = []
    exits: list[int] = []
    for l in range(spec.prelude_layers):  # unique first layers
        cores.append(LayerCore(w[l]))
        apps.append(Application(len(cores) - 1, None, l, layers[l][1], layers[l][2]))
    first_shared = len(cores)
    cores.extend(LayerCore(s) for s in shared)
    from tqdm import tqdm
    bar = tqdm(total=spec.num_loops * K * len(LINEARS) if spec.lora_rank > 0 and svd else 0,
               desc="LoRA init (SVD)", unit="matrix", disable=None, leave=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small fp64 SVDs: measured 0.15 s on 1 thread, 11 s on 2 of a busy machine
    try:
        for i in range(spec.num_loops):
            for j in range(K):
                l = spec.prelude_layers + i * K + j
                loras = {}
                if spec.lora_rank > 0:
                    loras = {n: _svd_lora(w[l][n] - shared[j][n], spec.lora_rank, svd) for n in LINEARS}
                    bar.update(len(LINEARS) if svd else 0)
                apps.append(Application(first_shared + j, i, l, layers[l][1], layers[l][2], loras))
            exits.append(len(apps) - 1)
    finally:
        torch.set_num_threads(threads)
        bar.close()
    for l in range(L - spec.coda_layers, L):  # unique last layers
        cores.append(LayerCore(w[l]))
        apps.append(Application(len(cores) - 1, None, l, layers[l][1], layers[l][2]))
    exits[-1] = len(apps) - 1
    return RecursiveLM(dims, embed.clone(), fnorm, cores, apps, exits, spec, L)


def save_model(model: RecursiveLM, path, extra: dict | None = None):
    """Checkpoint: trainable weights + structure (embeddings are not saved;
    they come back from the base model, which is frozen)."""
    sd = {k: v for k, v in model.state_dict().items() if k != "embed"}
    torch.save({"structure": model.structure(), "state": sd, **(extra or {})}, path)


def load_model(path, hf_model, map_location="cpu") -> tuple[RecursiveLM, dict]:
    """Rebuild a converted model from ``hf_model`` and restore a checkpoint."""
    ck = torch.load(path, map_location=map_location, weights_only=False)
    spec = RecursiveSpec.from_dict(ck["structure"]["spec"])
    model = convert(hf_model, spec, svd=False)
    missing, unexpected = model.load_state_dict(ck["state"], strict=False)
    if [m for m in missing if m != "embed"] or unexpected:
        raise RuntimeError(f"checkpoint mismatch: {missing[:5]} {unexpected[:5]}")
    return model, ck
