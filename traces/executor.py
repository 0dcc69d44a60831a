"""The real backend of the engine: a `StepClock` that runs each step on the model.

The engine (same SimPy process, same schedulers, same `SlotState`) decides who
computes; this clock executes exactly that step on a recursive SmolLM2 and
returns the measured wall time, which the engine then advances by. So a real
run and a simulated one differ only in where a step's duration comes from.

What one step does, as `sim.cost` charges it:
  * prefill of the requests admitted before the step: every layer and loop over
    their prompts, writing every KV cache, as one right-padded batch;
  * the prelude layers for tokens entering loop 1 (embedding first);
  * the shared block for every computing token, each with its own loop's LoRA and
    norms. Tokens are sorted by loop so each loop's tokens are one contiguous
    slice: the shared weights are applied once to the whole step (one matmul per
    linear layer, the point of depth-wise batching), the per-loop LoRA deltas and
    the attention run per loop over that loop's KV cache;
  * for leaving tokens the coda layers, final norm and LM head; with
    `checks_every_loop` every other computing token also evaluates the head (how a
    confidence exit decides), so heads = computing tokens, as the simulator counts.

Token semantics: the trace's generated tokens are fed teacher-forced, so the real
run makes the same exit decisions as the simulation. Prefill covers the prompt
minus its last token; the decode of generated position p consumes sequence token
P-1+p (the last prompt token, then generated token p-1) and predicts token p, so
its logits after loop k are the ones the trace recorded for that token.

KV per loop: every (loop, block layer) has its own cache (slot, kv_head, position,
head_dim); prelude and coda layers one each. kv_policy=ignore: a token that exits
at loop e leaves no KV deeper than e, so deeper loops mask those positions out
(per-loop validity). kv_policy=share: every loop reads (and only loop 1 writes)
loop 1's KV.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sim.cost import StepLoad
from sim.cost_profiled import LOAD_COLUMNS, load_row
from sim.errors import ConfigError, InvariantError
from sim.step import StepBatch

from .llama import rms_norm
from .recursive import RecursiveLM

KV_POLICIES = ("ignore", "share")
# One row of the per-step log: the load a cost model sees, then the measured seconds
# (the profile and sim.cost_profiled use the same columns).
LOG_COLUMNS = LOAD_COLUMNS + ("seconds",)


@dataclass
class Dense:
    """One decoder layer's shared linear weights, fused where inputs coincide."""
    qkv: torch.Tensor  # (q + 2 kv, d)
    o: torch.Tensor
    gate_up: torch.Tensor  # (2 mlp, d)
    down: torch.Tensor


@dataclass
class Delta:
    """One loop's LoRA on one block layer: A stacked over fused linears, B block-diagonal,
    so a fused projection gets its whole delta from two matmuls."""
    a_qkv: torch.Tensor
    b_qkv: torch.Tensor
    a_o: torch.Tensor
    b_o: torch.Tensor
    a_gu: torch.Tensor
    b_gu: torch.Tensor
    a_down: torch.Tensor
    b_down: torch.Tensor


def _block_diag_b(bs: list[torch.Tensor]) -> torch.Tensor:
    return torch.block_diag(*bs)


class PackedModel:
    """A `RecursiveLM` rearranged for serving: fused dense weights in the compute dtype,
    per-loop norms stacked so a step gathers each token's norm row, LoRA fused."""

    def __init__(self, model: RecursiveLM, dtype=torch.bfloat16, device="cpu"):
        d = model.dims
        self.dims, self.dtype, self.device = d, dtype, torch.device(device)
        spec = model.spec
        self.loops = spec.num_loops if spec else 1
        self.prelude_n = spec.head if spec else 0
        self.coda_n = spec.tail if spec else 0
        n_apps = len(model.apps)
        self.block_n = (n_apps - self.prelude_n - self.coda_n) // self.loops
        to = dict(dtype=dtype, device=self.device)

        def dense(core) -> Dense:
            w = {n: p.detach() for n, p in core.w.items()}
            return Dense(torch.cat([w["q"], w["k"], w["v"]]).to(**to).contiguous(), w["o"].to(**to).contiguous(),
                         torch.cat([w["gate"], w["up"]]).to(**to).contiguous(), w["down"].to(**to).contiguous())

        apps = list(model.apps)
        pre = apps[:self.prelude_n]
        coda = apps[n_apps - self.coda_n:]
        block = apps[self.prelude_n:n_apps - self.coda_n]
        self.prelude = [(dense(model.cores[a.core]), a.norm_in.detach().to(**to), a.norm_post.detach().to(**to))
                        for a in pre]
        self.coda = [(dense(model.cores[a.core]), a.norm_in.detach().to(**to), a.norm_post.detach().to(**to))
                     for a in coda]
        K, N = self.block_n, self.loops
        # block[j]: dense weights of block position j (shared across loops; for a model with
        # one loop and unique layers these are simply its layers)
        self.block = [dense(model.cores[block[j].core]) for j in range(K)]
        # norms[j]: (loops, d) per block position; a token of loop k uses row k-1
        self.norm_in = [torch.stack([block[k * K + j].norm_in.detach() for k in range(N)]).to(**to) for j in range(K)]
        self.norm_post = [torch.stack([block[k * K + j].norm_post.detach() for k in range(N)]).to(**to)
                          for j in range(K)]
        self.lora: list[list[Delta | None]] = []  # [loop][j]
        for k in range(N):
            row = []
            for j in range(K):
                lo = block[k * K + j].loras
                if len(lo) == 0:
                    row.append(None)
                    continue
                A = {n: lo[n].A.detach() for n in lo}
                B = {n: lo[n].B.detach() for n in lo}
                row.append(Delta(
                    torch.cat([A["q"], A["k"], A["v"]]).to(**to).contiguous(),
                    _block_diag_b([B["q"], B["k"], B["v"]]).to(**to).contiguous(),
                    A["o"].to(**to).contiguous(), B["o"].to(**to).contiguous(),
                    torch.cat([A["gate"], A["up"]]).to(**to).contiguous(),
                    _block_diag_b([B["gate"], B["up"]]).to(**to).contiguous(),
                    A["down"].to(**to).contiguous(), B["down"].to(**to).contiguous()))
            self.lora.append(row)
        self.embed = model.embed.detach().to(**to).contiguous()
        self.final_norm = model.final_norm.detach().to(**to)
        self.q_width = d.heads * d.head_dim
        self.kv_width = d.kv_heads * d.head_dim
        self.mlp = self.block[0].gate_up.shape[0] // 2 if K else self.prelude[0][0].gate_up.shape[0] // 2
        hd = d.head_dim
        self.inv_freq = 1.0 / (d.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32,
                                                             device=self.device) / hd))

    def layout(self) -> dict:
        """What a profile must match to be used for this model (sim.cost_profiled)."""
        d = self.dims
        return {"loops": self.loops, "layers_per_block": self.block_n, "prelude_layers": self.prelude_n,
                "coda_layers": self.coda_n, "d_model": d.hidden, "n_heads": d.heads, "n_kv_heads": d.kv_heads,
                "head_dim": d.head_dim, "d_mlp": self.mlp, "vocab": d.vocab,
                "lora_rank": int(self.lora[0][0].a_o.shape[0]) if self.lora and self.lora[0] and self.lora[0][0]
                else 0}

    def rope(self, positions: torch.Tensor):
        """cos, sin of shape (n, 1, head_dim) for one position per row."""
        f = positions.float()[:, None] * self.inv_freq
        emb = torch.cat([f, f], dim=-1)[:, None]
        return emb.cos().to(self.dtype), emb.sin().to(self.dtype)


def _rope(x, cos, sin):
    h = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., h:], x[..., :h]], dim=-1) * sin


def _norm_rows(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm with one weight row per token (w broadcastable to x), fp32 inside."""
    x32 = x.float()
    return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


class RealSteps:
    """`StepClock` of the real backend: executes each engine step, returns its wall time.

    `sequences[r]` is workload request r's prompt followed by its generated tokens
    (teacher forcing); `prompt_len[r]` how many of them are prompt. `record` keeps the
    logits of every head evaluation (tests compare them with a token-by-token reference).
    """

    needs_batch = True

    def __init__(self, packed: PackedModel, batch_size: int, prompt_len: np.ndarray,
                 sequences: list[np.ndarray], kv_policy: str = "ignore", checks_every_loop: bool = False,
                 record: bool = False):
        if kv_policy not in KV_POLICIES:
            raise ConfigError(f"exit.kv_policy={kv_policy!r} is not executed for real; "
                              f"the real backend runs {', '.join(KV_POLICIES)}")
        m = self.m = packed
        self.kv_policy = kv_policy
        self.checks_every_loop = checks_every_loop
        self.prompt_len = np.asarray(prompt_len, dtype=np.int64)
        lens = np.array([len(s) for s in sequences], dtype=np.int64)
        if np.any(self.prompt_len < 1) or np.any(lens < self.prompt_len):
            raise ConfigError("every request needs a prompt of at least one token")
        self.seq_off = np.concatenate(([0], np.cumsum(lens)))
        self.flat = torch.as_tensor(np.concatenate(sequences) if sequences else np.zeros(0, np.int64),
                                    dtype=torch.long, device=m.device)
        self.seq_list = [torch.as_tensor(s, dtype=torch.long, device=m.device) for s in sequences]
        t_max = int(lens.max()) if lens.size else 1
        dev, dt = m.device, m.dtype
        d = m.dims
        B = batch_size
        kv_loops = 1 if kv_policy == "share" else m.loops

        def cache():
            return (torch.zeros(B, d.kv_heads, t_max, d.head_dim, dtype=dt, device=dev),
                    torch.zeros(B, d.kv_heads, t_max, d.head_dim, dtype=dt, device=dev))

        self.kv_pre = [cache() for _ in m.prelude]
        self.kv_coda = [cache() for _ in m.coda]
        self.kv_block = [[cache() for _ in range(m.block_n)] for _ in range(kv_loops)]
        # valid[k][slot, t]: position t has KV at loop k+1 (kv_policy=ignore)
        self.valid = torch.zeros(kv_loops, B, t_max, dtype=torch.bool, device=dev)
        self.hidden = torch.zeros(B, d.hidden, dtype=dt, device=dev)  # residual stream between loops
        self.t_arange = torch.arange(t_max, device=dev)
        self.records: list[dict] | None = [] if record else None
        self.cuda = dev.type == "cuda"
        self.log: list[tuple] = []  # (load fields..., seconds) per step: the per-step log

    def set_context(self, slot: int, position: int, request: int, valid_at: np.ndarray | None = None) -> None:
        """Profiling: pretend `slot` holds `request` at generated `position`, its earlier
        positions holding KV at every loop except where `valid_at` (loops, generated
        positions) says no. KV contents stay as they are: step time does not depend on them."""
        start = int(self.prompt_len[request]) - 1
        self.valid[:, slot] = False
        self.valid[:, slot, :start + position] = True
        if valid_at is not None and position:
            self.valid[:, slot, start:start + position] = torch.as_tensor(valid_at[:, :position], device=self.valid.device)

    # -- StepClock ------------------------------------------------------------------
    @torch.inference_mode()
    def step_seconds(self, load: StepLoad, batch: StepBatch | None) -> float:
        if batch is None:
            raise InvariantError("the real backend needs the step's batch (needs_batch=True)")
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        self.run_step(batch)
        if self.cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        self.log.append(load_row(load) + (dt,))
        return dt

    # -- one step -------------------------------------------------------------------
    def run_step(self, batch: StepBatch) -> None:
        if batch.admitted.size:
            slots = []
            for r in batch.admitted.tolist():
                where = np.flatnonzero(batch.requests == r)
                if where.size != 1:
                    raise InvariantError(f"request {r} was admitted but does not compute in the next step")
                slots.append(int(batch.slots[where[0]]))
            self.prefill(slots, batch.admitted.tolist())
        if batch.slots.size:
            self.decode(batch)

    def prefill(self, slots: list[int], reqs: list[int]) -> None:
        """The admitted prompts (minus their last token) through every layer and loop in one
        batch, right-padded to the longest (a causal mask keeps real tokens off the padding,
        and padding KV lands beyond each prompt, where decode overwrites it before reading)."""
        m = self.m
        lens = [int(self.prompt_len[r]) - 1 for r in reqs]
        for s_, L in zip(slots, lens):
            self.valid[:, s_] = False
            self.valid[:, s_, :L] = True
        keep = [i for i, L in enumerate(lens) if L > 0]
        if not keep:
            return
        n, Pm = len(keep), max(lens[i] for i in keep)
        ids = torch.zeros(n, Pm, dtype=torch.long, device=m.device)
        for row, i in enumerate(keep):
            ids[row, :lens[i]] = self.seq_list[reqs[i]][:lens[i]]
        sl = torch.as_tensor([slots[i] for i in keep], device=m.device)
        x = m.embed[ids]  # (n, Pm, d)
        cos, sin = m.rope(torch.arange(Pm, device=m.device))
        cos, sin = cos[:, 0][None, None], sin[:, 0][None, None]  # (1, 1, Pm, hd)
        causal = self._causal(Pm).repeat(1, m.dims.heads // m.dims.kv_heads, 1)
        for (w, n_in, n_post), kv in zip(m.prelude, self.kv_pre):
            x = self._prefill_layer(x, w, None, n_in, n_post, kv, kv, sl, cos, sin, causal)
        share = self.kv_policy == "share"
        for k in range(m.loops):
            for j in range(m.block_n):
                write = self.kv_block[k][j] if not share or k == 0 else None
                read = self.kv_block[0 if share else k][j]
                x = self._prefill_layer(x, m.block[j], m.lora[k][j], m.norm_in[j][k], m.norm_post[j][k],
                                        write, read, sl, cos, sin, causal)
        for (w, n_in, n_post), kv in zip(m.coda, self.kv_coda):
            x = self._prefill_layer(x, w, None, n_in, n_post, kv, kv, sl, cos, sin, causal)

    def _prefill_layer(self, x, w: Dense, lo: Delta | None, n_in, n_post, write, read, sl, cos, sin, causal):
        m, d = self.m, self.m.dims
        n, P = x.shape[0], x.shape[1]
        rep = d.heads // d.kv_heads
        h = rms_norm(x, n_in, d.eps)
        qkv = F.linear(h, w.qkv)
        if lo is not None:
            qkv = qkv + F.linear(F.linear(h, lo.a_qkv), lo.b_qkv)
        q, k, v = qkv.split([m.q_width, m.kv_width, m.kv_width], dim=-1)
        q = _rope(q.view(n, P, d.heads, d.head_dim).transpose(1, 2), cos, sin)
        if write is not None:
            k = _rope(k.view(n, P, d.kv_heads, d.head_dim).transpose(1, 2), cos, sin)
            v = v.view(n, P, d.kv_heads, d.head_dim).transpose(1, 2)
            write[0][sl, :, :P] = k
            write[1][sl, :, :P] = v
        else:
            k, v = read[0][sl, :, :P], read[1][sl, :, :P]
        qq = q.reshape(n * d.kv_heads, rep * P, d.head_dim)
        kk = k.reshape(n * d.kv_heads, P, d.head_dim)
        vv = v.reshape(n * d.kv_heads, P, d.head_dim)
        sc = torch.baddbmm(causal.expand(n * d.kv_heads, rep * P, P), qq, kk.transpose(1, 2),
                           alpha=d.head_dim ** -0.5)
        pr = torch.softmax(sc, -1, dtype=torch.float32).to(x.dtype)
        a = torch.bmm(pr, vv).view(n, d.heads, P, d.head_dim).transpose(1, 2).reshape(n, P, m.q_width)
        o = F.linear(a, w.o)
        if lo is not None:
            o = o + F.linear(F.linear(a, lo.a_o), lo.b_o)
        x = x + o
        return x + self._mlp(rms_norm(x, n_post, d.eps), w, lo)

    def _causal(self, P: int) -> torch.Tensor:
        i = torch.arange(P, device=self.m.device)
        return torch.zeros(P, P, dtype=self.m.dtype, device=self.m.device).masked_fill_(
            i[None, :] > i[:, None], float("-inf"))[None]

    def _mlp(self, h, w: Dense, lo: Delta | None):
        gu = F.linear(h, w.gate_up)
        if lo is not None:
            gu = gu + F.linear(F.linear(h, lo.a_gu), lo.b_gu)
        g, u = gu.chunk(2, dim=-1)
        a = F.silu(g) * u
        out = F.linear(a, w.down)
        if lo is not None:
            out = out + F.linear(F.linear(a, lo.a_down), lo.b_down)
        return out

    def _group(self, a: int, b: int, slots_np, pos_np, slots, pos, vrow: int | None) -> "_Group":
        """Rows a:b of the step attending over one cache family; mask built once per step."""
        sl_np, ps_np = slots_np[a:b], pos_np[a:b]
        L = int(ps_np.max()) + 1
        contiguous = bool(np.all(np.diff(sl_np) == 1))
        sl, ps = slots[a:b], pos[a:b]
        mask = self.t_arange[:L][None, :] <= ps[:, None]
        if vrow is not None:
            mask = mask & self.valid[vrow, sl, :L]
        d = self.m.dims
        bias = torch.zeros(mask.shape, dtype=self.m.dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
        bias = bias[:, None, None, :].expand(b - a, d.kv_heads, d.heads // d.kv_heads, L)
        return _Group(a, b, sl, ps, L, int(sl_np[0]) if contiguous else None,
                      bias.reshape((b - a) * d.kv_heads, d.heads // d.kv_heads, L))

    def decode(self, batch: StepBatch) -> None:
        m, d = self.m, self.m.dims
        dev = m.device
        order = np.argsort(batch.loops, kind="stable")
        slots_np = batch.slots[order]
        loops_np = batch.loops[order]
        req_np = batch.requests[order]
        leaving_np = batch.leaving[order]
        pos_np = self.prompt_len[req_np] - 1 + batch.positions[order]  # absolute position of the input
        counts = np.bincount(loops_np, minlength=m.loops + 1)
        bounds = np.concatenate(([0], np.cumsum(counts[1:])))
        n = slots_np.size
        slots = torch.as_tensor(slots_np, device=dev)
        pos = torch.as_tensor(pos_np, device=dev)
        cos, sin = m.rope(pos)
        n_enter = int(counts[1])
        # residual stream: loop-1 tokens start from the embedding (+ prelude), others resume
        if n_enter == n:
            x = torch.empty(n, d.hidden, dtype=m.dtype, device=dev)
        else:
            x = self.hidden[slots]
        if n_enter:
            ids = self.flat[torch.as_tensor(self.seq_off[req_np[:n_enter]] + pos_np[:n_enter], device=dev)]
            xe = m.embed[ids]
            if m.prelude:
                g = [self._group(0, n_enter, slots_np, pos_np, slots, pos, None)]
                c, s = cos[:n_enter], sin[:n_enter]
                for (w, n_in, n_post), kv in zip(m.prelude, self.kv_pre):
                    xe = self._layer(xe, w, (), n_in, n_post, g, [kv], [True], c, s)
            x[:n_enter] = xe
        share = self.kv_policy == "share"
        if not share:  # this step's tokens now hold KV at their loop
            self.valid[torch.as_tensor(loops_np - 1, device=dev), slots, pos] = True
        loops_present = [k for k in range(1, m.loops + 1) if counts[k]]
        groups = [self._group(int(bounds[k - 1]), int(bounds[k]), slots_np, pos_np, slots, pos,
                              None if share else k - 1) for k in loops_present]
        writes = [not (share and k > 1) for k in loops_present]
        lidx = torch.as_tensor(loops_np - 1, device=dev)
        for j in range(m.block_n):
            caches = [self.kv_block[0 if share else k - 1][j] for k in loops_present]
            loras = [(g.a, g.b, m.lora[k - 1][j]) for g, k in zip(groups, loops_present)]
            n_in = m.norm_in[j][lidx] if len(groups) > 1 else m.norm_in[j][loops_present[0] - 1]
            n_post = m.norm_post[j][lidx] if len(groups) > 1 else m.norm_post[j][loops_present[0] - 1]
            x = self._layer(x, m.block[j], loras, n_in, n_post, groups, caches, writes, cos, sin)
        self.hidden[slots] = x
        # leaving tokens: coda, final norm, head; with exit checks every other token: head too
        leave = np.flatnonzero(leaving_np)
        if leave.size:
            li = torch.as_tensor(leave, device=dev)
            xl = x[li]
            if m.coda:
                lsl, lps = slots_np[leave], pos_np[leave]
                g = [self._group(0, leave.size, lsl, lps, torch.as_tensor(lsl, device=dev),
                                 torch.as_tensor(lps, device=dev), None)]
                c, s = cos[li], sin[li]
                for (w, n_in, n_post), kv in zip(m.coda, self.kv_coda):
                    xl = self._layer(xl, w, (), n_in, n_post, g, [kv], [True], c, s)
        if self.checks_every_loop:
            heads = x
            if leave.size:
                heads = x.clone()
                heads[li] = xl
            rows = np.arange(n)
        elif leave.size:
            heads, rows = xl, leave
        else:
            return
        logits = F.linear(rms_norm(heads, m.final_norm, d.eps), m.embed)
        top = logits.max(-1).values
        conf = torch.exp(top.float() - torch.logsumexp(logits.float(), -1))  # what a confidence exit reads
        if self.records is not None:
            self.records.append({"requests": req_np[rows], "positions": batch.positions[order][rows],
                                 "loops": loops_np[rows], "leaving": leaving_np[rows],
                                 "logits": logits.float().cpu(), "conf": conf.cpu()})

    def _layer(self, x, w: Dense, loras, n_in, n_post, groups, caches, writes, cos, sin):
        """One decoder layer over all rows of x: shared weights once, LoRA and attention
        per group (rows a:b of one loop, over that loop's cache)."""
        m, d = self.m, self.m.dims
        n = x.shape[0]
        h = _norm_rows(x, n_in, d.eps)
        qkv = F.linear(h, w.qkv)
        for a, b, lo in loras:
            if lo is not None:
                qkv[a:b] += F.linear(F.linear(h[a:b], lo.a_qkv), lo.b_qkv)
        q, k, v = qkv.split([m.q_width, m.kv_width, m.kv_width], dim=-1)
        q = _rope(q.view(n, d.heads, d.head_dim), cos, sin)
        k = _rope(k.view(n, d.kv_heads, d.head_dim), cos, sin)
        v = v.view(n, d.kv_heads, d.head_dim)
        if len(groups) == 1:
            att = self._attend(groups[0], caches[0], writes[0], q, k, v)
        else:
            att = torch.cat([self._attend(g, c, wr, q, k, v) for g, c, wr in zip(groups, caches, writes)])
        att = att.reshape(n, m.q_width)
        o = F.linear(att, w.o)
        for a, b, lo in loras:
            if lo is not None:
                o[a:b] += F.linear(F.linear(att[a:b], lo.a_o), lo.b_o)
        x = x + o
        h = _norm_rows(x, n_post, d.eps)
        gu = F.linear(h, w.gate_up)
        for a, b, lo in loras:
            if lo is not None:
                gu[a:b] += F.linear(F.linear(h[a:b], lo.a_gu), lo.b_gu)
        g_, u = gu.chunk(2, dim=-1)
        act = F.silu(g_) * u
        out = F.linear(act, w.down)
        for a, b, lo in loras:
            if lo is not None:
                out[a:b] += F.linear(F.linear(act[a:b], lo.a_down), lo.b_down)
        return x + out

    def _attend(self, g: "_Group", cache, write: bool, q, k, v):
        """Grouped-query attention of one token per row over its slot's cache, as two
        batched matmuls with an additive mask (torch's CPU SDPA kernel is 4-40x slower
        for one query per sequence with a mask on this machine)."""
        d = self.m.dims
        kc, vc = cache
        a, b = g.a, g.b
        n, rep = b - a, d.heads // d.kv_heads
        if write:
            kc[g.slots, :, g.pos] = k[a:b]
            vc[g.slots, :, g.pos] = v[a:b]
        if g.first is not None:  # contiguous slots: a view, no copy
            kk, vv = kc[g.first:g.first + n, :, :g.L], vc[g.first:g.first + n, :, :g.L]
        else:
            kk, vv = kc[g.slots, :, :g.L], vc[g.slots, :, :g.L]
        kk = kk.reshape(n * d.kv_heads, g.L, d.head_dim)
        vv = vv.reshape(n * d.kv_heads, g.L, d.head_dim)
        qq = q[a:b].reshape(n * d.kv_heads, rep, d.head_dim)
        s = torch.baddbmm(g.bias, qq, kk.transpose(1, 2), alpha=d.head_dim ** -0.5)
        p = torch.softmax(s, -1, dtype=torch.float32).to(q.dtype)
        return torch.bmm(p, vv).view(n, d.heads, d.head_dim)


@dataclass
class _Group:
    a: int
    b: int
    slots: torch.Tensor
    pos: torch.Tensor
    L: int
    first: int | None  # first slot when the group's slots are consecutive
    bias: torch.Tensor  # (rows * kv_heads, heads / kv_heads, L): 0 where a row may attend, -inf elsewhere


def warm_up(packed: PackedModel, kv_policy: str = "ignore", checks_every_loop: bool = False,
            batch: int = 8, steps: int = 8) -> None:
    """A few throwaway steps (prefill, mixed loops, leaving tokens, heads) so that one-time
    costs (kernel selection, first touch of buffers) do not land in a timed step."""
    rng = np.random.default_rng(0)
    P, G = 40, steps
    seqs = [rng.integers(0, packed.dims.vocab, size=P + G) for _ in range(batch)]
    rs = RealSteps(packed, batch, np.full(batch, P), seqs, kv_policy if kv_policy in KV_POLICIES else "ignore",
                   checks_every_loop)
    slots = np.arange(batch)
    for s in range(steps):
        loops = 1 + (slots + s) % packed.loops if s else np.ones(batch, dtype=np.int64)
        rs.run_step(StepBatch(slots, slots.copy(), np.full(batch, s // max(packed.loops, 1)), loops,
                              loops == packed.loops, slots.copy() if s == 0 else np.zeros(0, np.int64)))
