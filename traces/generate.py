"""Batched incremental decoding over one or more RecursiveLMs in lockstep.

Why lockstep: recording needs, at every position, the student's per-loop
predictions *and* the teacher's top-1 given the same prefix; running both
models on the same token stream (each with its own KV cache) gives exactly
that in one pass. Prompts are left-padded; positions come from the padding
mask, so padded and unpadded rows compute the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


def chat_ids(tok, prompt: str) -> list[int]:
    """ChatML prompt (the model's own chat template) ending in the assistant tag."""
    return tok.apply_chat_template([{"role": "user", "content": prompt}],
                                   add_generation_prompt=True, tokenize=True,
                                   return_dict=False)


def stop_ids(tok) -> set[int]:
    ids = {tok.eos_token_id}
    for t in ("<|im_end|>", "<|endoftext|>"):
        i = tok.convert_tokens_to_ids(t)
        if isinstance(i, int) and i >= 0 and i != tok.unk_token_id:
            ids.add(i)
    return {i for i in ids if i is not None}


@dataclass
class StepView:
    """What a decode step exposes to the caller's callback."""
    step: int                      # index of the token being generated
    logits: list[list[torch.Tensor]]  # [model][exit] -> (B, vocab), last position
    active: torch.Tensor           # (B,) bool: row still generating
    token: torch.Tensor | None = None  # (B,) chosen token (set after choose)


@dataclass
class DecodeResult:
    tokens: list[list[int]] = field(default_factory=list)  # generated ids per row (incl. stop)


@torch.no_grad()
def decode(models, prompts: list[list[int]], choose: Callable[[StepView], torch.Tensor],
           max_new: int, stops: set[int], pad_id: int,
           on_step: Callable[[StepView], None] | None = None) -> DecodeResult:
    """Generate for a batch of prompt id lists.

    choose(view) returns the next token per row (e.g. greedy on model 0's last
    exit). A row stops after emitting a stop token or max_new tokens; the stop
    token is included in its output (the simulator counts it as a generated
    token, as a server would).
    """
    dev = models[0].embed.device
    B = len(prompts)
    P = max(len(p) for p in prompts)
    ids = torch.full((B, P), pad_id, dtype=torch.long, device=dev)
    valid = torch.zeros((B, P), dtype=torch.bool, device=dev)
    for b, p in enumerate(prompts):
        ids[b, P - len(p):] = torch.tensor(p, device=dev)
        valid[b, P - len(p):] = True
    pos = (valid.long().cumsum(1) - 1).clamp(min=0)
    caches = [m.new_caches() for m in models]
    hs = [m.hidden_states(ids, pos, c, valid) for m, c in zip(models, caches)]
    next_pos = pos[:, -1] + 1
    active = torch.ones(B, dtype=torch.bool, device=dev)
    out = DecodeResult([[] for _ in range(B)])
    stop_t = torch.tensor(sorted(stops), dtype=torch.long, device=dev)
    for step in range(max_new):
        logits = [[m.logits(h[:, -1]) for h in hh] for m, hh in zip(models, hs)]
        view = StepView(step, logits, active.clone())
        tok = choose(view)
        tok = torch.where(active, tok, torch.full_like(tok, pad_id))
        view.token = tok
        if on_step is not None:
            on_step(view)
        for b in torch.nonzero(active).flatten().tolist():
            out.tokens[b].append(int(tok[b]))
        active = active & ~torch.isin(tok, stop_t)
        if not active.any() or step == max_new - 1:
            break
        valid = torch.cat([valid, active[:, None]], dim=1)
        hs = [m.hidden_states(tok[:, None], next_pos[:, None], c, valid)
              for m, c in zip(models, caches)]
        next_pos = next_pos + 1
    return out


def greedy(view: StepView) -> torch.Tensor:
    """Greedy on model 0's final exit: the token every trace continues with."""
    return view.logits[0][-1].argmax(-1)


def sampler(temperature: float, generator: torch.Generator | None = None,
            top_p: float = 0.95, top_k: int = 100):
    """Temperature + nucleus sampling on model 0's final exit.

    The nucleus is taken inside the top_k tokens: a full sort of a 49k
    vocabulary per row per step costs more than the model on one CPU core.
    """
    def choose(view: StepView) -> torch.Tensor:
        lg = view.logits[0][-1].float() / max(temperature, 1e-6)
        lse = torch.logsumexp(lg, -1, keepdim=True)
        top, idx = lg.topk(top_k, dim=-1)  # sorted, descending
        p = (top - lse).exp()
        keep = p.cumsum(-1) - p < top_p
        p = p * keep
        pick = torch.multinomial(p / p.sum(-1, keepdim=True), 1, generator=generator)
        return idx.gather(-1, pick).squeeze(-1)
    return choose
