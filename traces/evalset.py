"""Held-out agreement: does exit k's top-1 match the original model's top-1?

The teacher's greedy answers to a few held-out prompts are generated once and
cached; the student is run teacher-forced over them and we count, over the
answer positions only, how often each exit's argmax equals the teacher's
argmax. That is the quantity the 0.6 target refers to (measured on the
student's own trajectory by the recorder; teacher-forced here because it is
cheap and comparable across checkpoints).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base_model import cache_root, describe_source
from .generate import chat_ids, decode, greedy, stop_ids
from .prompts import load_prompts


def eval_prompts(n: int) -> list[dict]:
    """n held-out prompts spread evenly over the held-out list (all categories)."""
    held = load_prompts("heldout")
    step = max(len(held) // n, 1)
    return held[::step][:n]


@torch.no_grad()
def build_evalset(teacher, tok, source: str, n: int, max_new: int) -> dict:
    path = cache_root() / "eval" / f"{describe_source(source)}-n{n}-m{max_new}.pt"
    if path.exists():
        return torch.load(path)
    prompts = eval_prompts(n)
    ids = [chat_ids(tok, p["prompt"]) for p in prompts]
    res = decode([teacher], ids, greedy, max_new, stop_ids(tok), tok.pad_token_id or 0)
    seqs = [p + g for p, g in zip(ids, res.tokens)]
    T = max(len(s) for s in seqs)
    inp = torch.full((len(seqs), T), tok.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.bool)  # positions predicting answer tokens
    for b, (p, s) in enumerate(zip(ids, seqs)):
        inp[b, :len(s)] = torch.tensor(s)
        mask[b, len(p) - 1:len(s) - 1] = True
    t_logits = teacher(inp.to(teacher.embed.device))[-1].cpu()
    ev = {"input": inp, "mask": mask, "teacher_top1": t_logits.argmax(-1),
          "teacher_logp": None, "prompt_ids": [p["id"] for p in prompts]}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ev, path)
    return ev


@torch.no_grad()
def agreement(model, ev: dict, teacher=None, chunk: int = 4) -> dict:
    """Per-exit agreement with the teacher and with the final exit."""
    inp, mask, tt = ev["input"], ev["mask"], ev["teacher_top1"]
    n = int(mask.sum())
    agree = torch.zeros(model.num_exits)
    agree_final = torch.zeros(model.num_exits)
    for i in range(0, inp.shape[0], chunk):
        outs = model(inp[i:i + chunk])
        m = mask[i:i + chunk]
        preds = [o.argmax(-1) for o in outs]
        for k, p in enumerate(preds):
            agree[k] += int(((p == tt[i:i + chunk]) & m).sum())  # int(): counts may live on a GPU
            agree_final[k] += int(((p == preds[-1]) & m).sum())
    out = {f"agree_{k + 1}": float(agree[k] / n) for k in range(model.num_exits)}
    out.update({f"agree_final_{k + 1}": float(agree_final[k] / n) for k in range(model.num_exits - 1)})
    out["eval_tokens"] = n
    return out
