"""Uptrain a relaxed recursive model: distillation + early-exit loss.

    python -m traces.uptrain name=r2_mc_r64 num_loops=2 prelude_layers=1 coda_layers=1 lora_rank=64
    python -m traces.uptrain name=r3_mc_r64 num_loops=3 prelude_layers=1 coda_layers=2 device=cuda max_minutes=600

Loss per batch: sum_k w_k * KL(teacher || exit_k), with w = 0.1 for the
intermediate loops and 1.0 for the last (the paper's "aggressive" early-exit
weighting; KD to the original model rather than CE to data, because the
trace's quality measure is agreement with the original model), plus
``exit_weight_self`` * KL(final exit, detached || exit_k) for the intermediate
exits: an exit is taken when loop k already predicts what the *final* loop
will, so that agreement is what this term trains for directly, without
pulling the final loop towards the early one.

Speed on a CPU with bf16 units: the teacher only runs forward, so it is kept
in bf16 outright (``teacher_dtype``); the student keeps fp32 master weights
under bf16 autocast (``amp``). Both default to ``auto``: bf16 only where the
hardware computes it natively (``traces/precision.py``): emulated bf16 trains
about 4x slower than fp32.

Why this shape:
* runs unattended in the background: tqdm progress + a plain log, a
  learning-curve CSV (``curve.csv``), atomic checkpoints every few minutes
  (``last.pt``: model + optimizer + counters) and the best held-out
  checkpoint (``best.pt``); rerunning the same command resumes from last.pt
  and continues the same budget;
* the training text is the teacher's own samples over train prompts, grown
  during training (``refresh_every``) so tokens are not repeated too often;
* the same command scales to a GPU: device=cuda and a bigger budget/batch.
Embeddings (= tied LM head) are frozen; everything else trains (freeze_shared=true
also freezes the shared block's base weights, leaving LoRA, norms and unique layers).
"""
from __future__ import annotations

import csv
import os
import random
import sys
import time
from pathlib import Path

from .cli import torch_missing

if __name__ == "__main__" and torch_missing("traces.uptrain"):  # one line, not an ImportError traceback
    sys.exit(2)

import torch  # noqa: E402
import torch.nn.functional as F

from sim.trace_io import write_atomic

from .allocator import active
from .base_model import load_base, resolve_device
from .evalset import agreement, build_evalset
from .precision import resolve_amp, resolve_dtype
from .recursive import RecursiveSpec, convert, load_model, original_from_hf, save_model
from .textpool import add_shard, load_sequences, pool_tokens

CURVE_FIELDS = ["step", "tokens", "elapsed_s", "tok_s", "loss", "kl_last", "kl_first",
                "pool_tokens", "lr", "eval_tokens"]


def exit_weights(cfg, num_exits: int) -> list[float]:
    return [cfg.exit_weight_intermediate] * (num_exits - 1) + [cfg.exit_weight_last]


def kd_losses(outs, teacher_logits):
    """Per-exit KL(teacher || student), mean over tokens. The teacher's probabilities and
    entropy are computed once for all exits (F.kl_div would exponentiate them per exit)."""
    V = teacher_logits.shape[-1]
    tlp = F.log_softmax(teacher_logits.float(), -1).reshape(-1, V)
    tp = tlp.exp()
    n = tlp.shape[0]
    neg_entropy = (tp * tlp).sum() / n
    return [neg_entropy - (tp * F.log_softmax(o.float(), -1).reshape(-1, V)).sum() / n for o in outs]


def freeze_shared(model) -> None:
    """Only LoRA, norms and unique layers learn: no weight gradients for the shared block."""
    for core in {app.core for app in model.apps if app.loop is not None}:
        model.cores[core].requires_grad_(False)


def self_distill_losses(outs):
    """KL(final exit || exit k) for the intermediate exits, the final one detached."""
    final = outs[-1].detach()
    return kd_losses(outs[:-1], final) if len(outs) > 1 else []


def train_step(model, teacher, opt, params, x, weights, amp: bool = False, grad_clip: float = 0.0,
               self_weight: float = 0.0):
    """One optimizer step of distillation on a batch of token ids; returns (loss, per-exit KLs)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        with torch.no_grad():
            tl = teacher(x)[-1]
        outs = model(x)
    kls = kd_losses(outs, tl)
    loss = sum(w * k for w, k in zip(weights, kls))
    if self_weight:
        loss = loss + self_weight * sum(self_distill_losses(outs))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    return loss, kls


class WindowSampler:
    """Random fixed-length windows from the concatenated text pool."""

    def __init__(self, seqs: list[list[int]], seq_len: int, rng: random.Random):
        self.seq_len, self.rng = seq_len, rng
        self.reload(seqs)

    def reload(self, seqs):
        self.stream = torch.tensor([t for s in seqs for t in s], dtype=torch.long)

    def batch(self, n: int) -> torch.Tensor:
        hi = len(self.stream) - self.seq_len
        starts = [self.rng.randrange(0, hi) for _ in range(n)]
        return torch.stack([self.stream[s:s + self.seq_len] for s in starts])


def lr_at(cfg, step: int, tokens: int = 0) -> float:
    """Warmup, then constant; with `decay_tokens` > 0 the last decay_tokens before
    `max_tokens` decay it linearly to zero (warmup-stable-decay: a run can be extended
    at a constant rate and still end cooled down, by resuming with a new max_tokens)."""
    lr = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    if cfg.decay_tokens:
        lr *= min(1.0, max(0.0, (cfg.max_tokens - tokens) / cfg.decay_tokens))
    return lr


def train(cfg) -> dict:
    """Uptrain as `cfg` says. Its pid is in out_dir/pid while it runs, so that the timed
    commands (traces/quiet.py) can pause it."""
    dev = resolve_device(cfg.device)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "log.txt", "a")
    pid_file = out / "pid"  # while training: where traces/quiet.py finds the job to pause
    write_atomic(pid_file, lambda p: Path(p).write_text(f"{os.getpid()}\n"))
    try:
        return _train(cfg, dev, out, log)
    finally:
        pid_file.unlink(missing_ok=True)
        log.close()


def _train(cfg, dev, out: Path, log) -> dict:
    def say(msg):
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}"
        print(line, file=log, flush=True)
        print(line, file=sys.stderr, flush=True)

    amp, amp_why = resolve_amp(cfg.amp, str(dev))
    teacher_dtype, dtype_why = resolve_dtype(cfg.teacher_dtype, str(dev))
    say(f"precision: student {'bf16 autocast' if amp else 'fp32'} ({amp_why}), "
        f"teacher {teacher_dtype} ({dtype_why})")
    hf, tok = load_base(cfg.source)
    teacher = original_from_hf(hf).eval()
    spec = RecursiveSpec(cfg.num_loops, cfg.prelude_layers, cfg.coda_layers, cfg.init, cfg.lora_rank)
    last = out / "last.pt"
    if last.exists():
        model, ck = load_model(last, hf)
        state = ck["train_state"]
        say(f"resumed from {last}: step {state['step']}, {state['tokens']} tokens")
    else:
        t0 = time.time()
        model = convert(hf, spec)
        ck, state = None, {"step": 0, "tokens": 0, "elapsed_s": 0.0, "best": -1.0,
                           "rng": random.Random(cfg.seed).getstate()}
        say(f"converted {spec.describe(len(hf.model.layers))} ({spec.kind}, init {spec.init}, "
            f"rank {spec.lora_rank}) in {time.time() - t0:.1f}s")
    del hf
    model.to(dev).train()
    teacher.to(dev)
    if cfg.freeze_shared:
        freeze_shared(model)
    params = model.trainable_parameters()
    say(f"trainable params {sum(p.numel() for p in params) / 1e6:.1f}M (embeddings frozen"
        f"{', shared block frozen' if cfg.freeze_shared else ''}); exits {model.num_exits}; "
        f"{torch.get_num_threads()} threads, allocator {active()}")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    if ck is not None and "optimizer" in ck:
        opt.load_state_dict(ck["optimizer"])

    pool_teacher = teacher  # generation runs on the training device

    def grow_pool():
        info = add_shard(pool_teacher, tok, cfg.source, cfg.refresh_batch,
                         cfg.refresh_max_new, cfg.temperature)
        say(f"pool shard {info['shard']}: +{info['tokens']} tokens at {info['tok_s']:.0f} tok/s")

    teacher.eval()
    # the held-out reference is the original model at full precision, built before the cast
    ev = build_evalset(teacher, tok, cfg.source, cfg.eval_prompts, cfg.eval_max_new)
    teacher.to(getattr(torch, teacher_dtype))
    while pool_tokens(cfg.source) < cfg.min_pool_tokens:
        grow_pool()
    rng = random.Random()
    rng.setstate(state["rng"])
    sampler = WindowSampler(load_sequences(cfg.source), cfg.seq_len, rng)
    ev = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in ev.items()}
    weights = exit_weights(cfg, model.num_exits)

    curve_path = out / "curve.csv"
    new_curve = not curve_path.exists()
    curve = open(curve_path, "a", newline="")
    ev_fields = [f"agree_{k + 1}" for k in range(model.num_exits)] + \
        [f"agree_final_{k + 1}" for k in range(model.num_exits - 1)]
    writer = csv.DictWriter(curve, fieldnames=CURVE_FIELDS + ev_fields)
    if new_curve:
        writer.writeheader()

    def evaluate():
        model.eval()
        r = agreement(model, ev)
        model.train()
        return r

    def checkpoint(best_score=None):
        state["rng"] = rng.getstate()
        extra = {"train_state": dict(state), "optimizer": opt.state_dict(),
                 "config": {**(dict(cfg) if not hasattr(cfg, "_content") else _plain(cfg)),
                            "amp": amp, "teacher_dtype": teacher_dtype}}  # as resolved here
        write_atomic(last, lambda p: save_model(model, p, extra))
        if best_score is not None:
            write_atomic(out / "best.pt", lambda p: save_model(model, p, {"train_state": dict(state),
                                                                          "config": extra["config"]}))

    if state["step"] == 0:
        r = evaluate()
        writer.writerow({"step": 0, "tokens": 0, "elapsed_s": 0, "pool_tokens": pool_tokens(cfg.source),
                         **r})
        curve.flush()
        say(f"step 0 held-out agreement {_fmt(r)}")

    from tqdm import tqdm
    budget_s = cfg.max_minutes * 60
    start_elapsed = state["elapsed_s"]
    t_start = time.time()
    t_ckpt = time.time()
    win_tokens, win_t, win_loss, win_kl = 0, time.time(), [], []
    bar = tqdm(total=cfg.max_steps if cfg.max_steps < 10 ** 6 else None, initial=state["step"],
               desc=cfg.name, unit="step", file=sys.stderr, mininterval=10)
    while True:
        elapsed = start_elapsed + time.time() - t_start
        if state["step"] >= cfg.max_steps or state["tokens"] >= cfg.max_tokens or elapsed >= budget_s:
            break
        step = state["step"]
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step, state["tokens"])
        x = sampler.batch(cfg.batch).to(dev)
        loss, kls = train_step(model, teacher, opt, params, x, weights, amp, cfg.grad_clip,
                               cfg.exit_weight_self)
        state["step"] += 1
        state["tokens"] += x.numel()
        win_tokens += x.numel()
        win_loss.append(loss.item())
        win_kl.append([k.item() for k in kls])
        bar.update(1)
        bar.set_postfix(loss=f"{win_loss[-1]:.3f}", kl=f"{win_kl[-1][-1]:.3f}")
        state["elapsed_s"] = start_elapsed + time.time() - t_start
        s = state["step"]
        if cfg.eval_every and s % cfg.eval_every == 0:
            tok_s = win_tokens / (time.time() - win_t)
            r = evaluate()
            row = {"step": s, "tokens": state["tokens"], "elapsed_s": round(state["elapsed_s"], 1),
                   "tok_s": round(tok_s, 1), "loss": sum(win_loss) / len(win_loss),
                   "kl_last": sum(k[-1] for k in win_kl) / len(win_kl),
                   "kl_first": sum(k[0] for k in win_kl) / len(win_kl),
                   "pool_tokens": pool_tokens(cfg.source), "lr": lr_at(cfg, s, state["tokens"]), **r}
            writer.writerow(row)
            curve.flush()
            say(f"step {s} tokens {state['tokens']} train tok/s {tok_s:.1f} loss {row['loss']:.3f} "
                f"kl_last {row['kl_last']:.3f} held-out {_fmt(r)}")
            score = r[f"agree_{model.num_exits}"]
            state["eval_step"] = s
            if score > state["best"]:
                state["best"] = score
                checkpoint(best_score=score)
                t_ckpt = time.time()
            win_tokens, win_loss, win_kl = 0, [], []
            win_t = time.time()
        if time.time() - t_ckpt > cfg.ckpt_minutes * 60:
            checkpoint()
            t_ckpt = time.time()
            say(f"checkpoint step {s} -> {last}")
        if cfg.refresh_every and s % cfg.refresh_every == 0:
            t_g = time.time()
            model.eval()
            grow_pool()
            model.train()
            sampler.reload(load_sequences(cfg.source))
            win_t += time.time() - t_g  # train tok/s excludes pool generation
    bar.close()
    s = state["step"]
    if cfg.eval_every and s > state.get("eval_step", 0) and s % cfg.eval_every:
        # the budget ended between evaluations: evaluate the final model too, so that a
        # short run has a held-out score and best.pt
        r = evaluate()
        writer.writerow({"step": s, "tokens": state["tokens"], "elapsed_s": round(state["elapsed_s"], 1),
                         "pool_tokens": pool_tokens(cfg.source), "lr": lr_at(cfg, s, state["tokens"]), **r})
        curve.flush()
        say(f"step {s} (final) held-out {_fmt(r)}")
        state["eval_step"] = s
        if r[f"agree_{model.num_exits}"] > state["best"]:
            state["best"] = r[f"agree_{model.num_exits}"]
            checkpoint(best_score=state["best"])
    checkpoint(best_score=None if (out / "best.pt").exists() else state["best"])
    curve.close()
    best = (f"best held-out final-loop agreement {state['best']:.4f}" if state["best"] >= 0 else
            "no held-out evaluation after step 0 (eval_every=0 or no training step): best.pt is the final model")
    say(f"done: step {state['step']}, {state['tokens']} tokens, {state['elapsed_s'] / 60:.1f} min, {best}")
    return state


def _plain(cfg) -> dict:
    from omegaconf import OmegaConf
    c = OmegaConf.to_container(cfg, resolve=True)
    c.pop("hydra", None)
    return c


def _fmt(r: dict) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in r.items() if k.startswith("agree"))


def main():
    from .allocator import reexec_with_tcmalloc
    from .cli import check_hydra_command, run_checked

    run_checked(lambda argv: check_hydra_command("uptrain", argv, "traces.uptrain"), sys.argv[1:])
    reexec_with_tcmalloc("traces.uptrain")
    import hydra

    from sim.errors import UserError

    @hydra.main(config_path="conf", config_name="uptrain", version_base="1.3")
    def _run(cfg):
        try:
            train(cfg)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    _run()


if __name__ == "__main__":
    main()
