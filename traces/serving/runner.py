"""One engine step executed on the model: prefill of admitted prompts, then one decode loop
of every row of the `StepBatch`.

Rows (sim/step.py): one decode of one generated position p of one request. A step may hold
several rows of one request (depthwise_spec) at consecutive positions and different loops;
each attends its own loop's KV, and its residual stream between loops lives in the lane
(slot, p mod loops), which no two in-flight rows of a request share (at most `loops` of
them are in flight, at consecutive positions).

Tokens: `tokens[slot, t]` is the latest known token at absolute position t of the slot's
request (prompt, then generated; generated position p sits at P + p). A row entering loop 1
at position p reads `tokens[slot, P - 1 + p]`. Teacher-forced, the buffer holds the trace's
tokens and is never written; free-running, a leaving row writes its prediction at P + p
(the emitted token) and a drafting row its draft, which the verified token overwrites.

What a row runs in its step, as `sim.cost` charges it: the prelude when it enters loop 1
(embedding first); the shared block at its loop, rows sorted by loop so that the shared
weights are applied once to all rows and each loop's LoRA to its own slice; then, for
leaving and drafting rows (and every row with exit checks every loop), the coda, final norm
and head. KV policies: ignore (deeper loops mask out positions that never reached them),
share (every loop reads loop 1's KV; only loop-1 rows write it), propagate (an early exit
projects its hidden state through every skipped loop's layers' own K/V weights, so deeper
caches hold K/V at its position, CALM). The coda cache holds each position's latest coda
pass (a check or draft writes it; the token's final pass overwrites it last).

The only device-to-host transfer of a step is the one returning its predictions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sim.errors import ConfigError, InvariantError
from sim.step import StepBatch

from ..llama import rms_norm
from .kv import LoopKV, check_kv_policy
from .layer import Segments, decoder_layer, kv_projection
from .weights import PackedModel


@dataclass
class StepOutput:
    """What a step returns to the host, in the batch's row order."""
    heads: np.ndarray  # bool[n]: the row ran the exit path (coda, final norm, head)
    token: np.ndarray  # int64[n]: its top-1 prediction (-1 where no head ran)
    conf: np.ndarray  # float64[n]: its top-1 probability (what a confidence exit reads)
    leave: np.ndarray  # bool[n]: its token is final after this loop (engine's, or the live exit's)
    accepted: np.ndarray  # bool[n]: leaving with a draft equal to its final token
    logits: torch.Tensor | None = None  # (heads, vocab), rows of np.flatnonzero(heads), when recorded
    kv_proj_layers: int = 0  # layer K/V projections run for early exits (kv_policy=propagate)


class StepRunner:
    """The caches, residual lanes and token buffer of `slots` resident requests, and one step on them.

    `sequences[r]` holds request r's prompt (`prompt_len[r]` tokens) followed by its generated
    tokens (teacher forcing; free-running uses only the prompt and the length)."""

    def __init__(self, packed: PackedModel, slots: int, prompt_len: np.ndarray, sequences: list[np.ndarray],
                 kv_policy: str = "ignore", checks_every_loop: bool = False, free_running: bool = False,
                 live_threshold: float | None = None, record: bool = False):
        check_kv_policy(kv_policy)
        if live_threshold is not None and not checks_every_loop:
            raise ConfigError("exit=live needs an exit check after every loop (exit.head_every_loop=true)")
        m = self.m = packed
        self.kv_policy, self.checks_every_loop = kv_policy, checks_every_loop
        self.free_running, self.live_threshold, self.record = free_running, live_threshold, record
        self.prompt_len = np.asarray(prompt_len, dtype=np.int64)
        lens = np.array([len(s) for s in sequences], dtype=np.int64)
        if np.any(self.prompt_len < 1) or np.any(lens < self.prompt_len):
            raise ConfigError("every request needs a prompt of at least one token")
        self.gen_len = lens - self.prompt_len
        self.sequences = [torch.as_tensor(s[:p] if free_running else s, dtype=torch.long, device=m.device)
                          for s, p in zip(sequences, self.prompt_len.tolist())]
        T = int(lens.max()) if lens.size else 1
        m.ensure_positions(T)
        d, dev, dt = m.dims, m.device, m.dtype
        N = m.loops
        kv_loops = 1 if kv_policy == "share" else N

        def cache(loops):
            return LoopKV.empty(loops, slots, d.kv_heads, T, d.head_dim, dt, dev)

        self.kv_pre = [cache(1) for _ in m.prelude]
        self.kv_coda = [cache(1) for _ in m.coda]
        self.kv_block = [cache(kv_loops) for _ in range(m.block_n)]
        self.valid = torch.zeros(kv_loops, slots, T, dtype=torch.bool, device=dev)  # [loop, slot, t] holds KV
        self.hidden = torch.zeros(slots, N, d.hidden, dtype=dt, device=dev)  # residual stream per lane
        self.tokens = torch.zeros(slots, T, dtype=torch.long, device=dev)
        self.draft = torch.full((slots, N), -1, dtype=torch.long, device=dev)  # per lane; -1: none
        self.t_arange = torch.arange(T, device=dev)
        self.neg_inf = torch.tensor(float("-inf"), dtype=dt, device=dev)

    # -- the step -----------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, batch: StepBatch) -> StepOutput | None:
        if batch.admitted.size:
            slots = []
            for r in batch.admitted.tolist():
                where = np.flatnonzero(batch.requests == r)
                if where.size == 0:
                    raise InvariantError(f"request {r} was admitted but does not compute in the next step")
                slots.append(int(batch.slots[where[0]]))
            self.prefill(slots, batch.admitted.tolist())
        return self.decode(batch) if batch.slots.size else None

    def prefill(self, slots: list[int], reqs: list[int]) -> None:
        """The admitted prompts (minus their last token) through every layer and loop in one
        batch, right-padded to the longest (a causal mask keeps real tokens off the padding;
        padding KV lands beyond each prompt, where decode overwrites it before reading)."""
        m, d = self.m, self.m.dims
        dev = m.device
        lens = [int(self.prompt_len[r]) - 1 for r in reqs]
        for s_, r, L in zip(slots, reqs, lens):
            seq = self.sequences[r]
            self.tokens[s_, :seq.numel()] = seq
            self.valid[:, s_] = False
            self.valid[:, s_, :L] = True
            self.draft[s_] = -1
        keep = [i for i, L in enumerate(lens) if L > 0]
        if not keep:
            return
        n, P = len(keep), max(lens[i] for i in keep)
        sl = torch.as_tensor([slots[i] for i in keep], device=dev)
        x = m.embed[self.tokens[sl, :P]]  # (n, P, d)
        cos, sin = m.cos[:P, None], m.sin[:P, None]  # against (n, P, heads, hd)
        i = torch.arange(P, device=dev)
        causal = torch.zeros(P, P, dtype=m.dtype, device=dev).masked_fill_(i[None, :] > i[:, None], float("-inf"))
        rep = d.heads // d.kv_heads

        def attend_prompt(cache: LoopKV, write: bool, loop: int):
            def attend(q, k, v):  # q (n, P, H, hd); k, v (n, P, KV, hd)
                if write:
                    k, v = k.transpose(1, 2), v.transpose(1, 2)
                    cache.write_prefix(loop, sl, k, v)
                else:  # kv_policy=share: deeper loops read loop 1's prompt KV
                    k, v = cache.read_prefix(0, sl, P)
                qq = q.transpose(1, 2).reshape(n * d.kv_heads, rep * P, d.head_dim)
                s = torch.baddbmm(causal.repeat(1, rep, 1).expand(n * d.kv_heads, rep * P, P), qq,
                                  k.reshape(n * d.kv_heads, P, d.head_dim).transpose(1, 2), alpha=d.head_dim ** -0.5)
                p = torch.softmax(s, -1, dtype=torch.float32).to(q.dtype)
                a = torch.bmm(p, v.reshape(n * d.kv_heads, P, d.head_dim))
                return a.view(n, d.heads, P, d.head_dim).transpose(1, 2).reshape(n, P, m.q_width)
            return attend

        for layer, cache in zip(m.prelude, self.kv_pre):
            x = self._layer(x, layer.w, layer.norm_in, layer.norm_post, [], cos, sin, attend_prompt(cache, True, 0))
        share = self.kv_policy == "share"
        for k in range(m.loops):
            for j in range(m.block_n):
                lo = m.lora[k][j]
                x = self._layer(x, m.block[j], m.norm_in[j, k], m.norm_post[j, k], [] if lo is None else [(0, n, lo)],
                                cos, sin, attend_prompt(self.kv_block[j], not share or k == 0, 0 if share else k))
        for layer, cache in zip(m.coda, self.kv_coda):
            x = self._layer(x, layer.w, layer.norm_in, layer.norm_post, [], cos, sin, attend_prompt(cache, True, 0))

    def _layer(self, x, w, n_in, n_post, lora, cos, sin, attend):
        m = self.m
        return decoder_layer(x, w, n_in, n_post, lora, cos, sin, attend, m.dims, m.q_width, m.kv_width)

    def _attend_rows(self, cache: LoopKV, loop, slot, pos, L: int, bias, writes: int | None):
        """Attention of one query per row over its own (loop, slot) cache; the first `writes`
        rows (all when None) write their K/V first. Two batched matmuls with an additive mask
        (torch's CPU SDPA is 4-40x slower for one query per sequence with a mask)."""
        d = self.m.dims
        rep = d.heads // d.kv_heads

        def attend(q, k, v):
            n = q.shape[0]
            if writes is None:
                cache.write(loop, slot, pos, k, v)
            elif writes:
                cache.write(loop[:writes], slot[:writes], pos[:writes], k[:writes], v[:writes])
            kk, vv = cache.read(loop, slot, L)
            s = torch.baddbmm(bias, q.reshape(n * d.kv_heads, rep, d.head_dim),
                              kk.reshape(n * d.kv_heads, L, d.head_dim).transpose(1, 2), alpha=d.head_dim ** -0.5)
            p = torch.softmax(s, -1, dtype=torch.float32).to(q.dtype)
            return torch.bmm(p, vv.reshape(n * d.kv_heads, L, d.head_dim)).view(n, self.m.q_width)
        return attend

    def _bias(self, pos, L: int, valid_rows=None):
        """(rows * kv_heads, heads / kv_heads, L) additive mask: 0 where a row may attend."""
        d = self.m.dims
        ok = self.t_arange[:L][None, :] <= pos[:, None]
        if valid_rows is not None:
            ok = ok & valid_rows
        n, rep = ok.shape[0], d.heads // d.kv_heads
        bias = torch.where(ok, 0.0, self.neg_inf).to(self.m.dtype)
        return bias[:, None, None, :].expand(n, d.kv_heads, rep, L).reshape(n * d.kv_heads, rep, L)

    def decode(self, batch: StepBatch) -> StepOutput:
        m, d = self.m, self.m.dims
        N, dev = m.loops, m.device
        order = np.argsort(batch.loops, kind="stable")
        loops_np = batch.loops[order]
        req_np = batch.requests[order]
        gpos_np = batch.positions[order]
        leaving_np = batch.leaving[order]
        drafting = getattr(batch, "drafting", None)
        drafting_np = drafting[order] if drafting is not None else np.zeros(order.size, dtype=bool)
        apos_np = self.prompt_len[req_np] - 1 + gpos_np  # absolute position of the row's input token
        n = order.size
        lanes = batch.slots[order] * N + gpos_np % N
        if np.unique(lanes).size != n:
            raise InvariantError("two rows of one request in one step share a residual lane: more than "
                                 f"{N} rows in flight, or not at consecutive positions")
        enter = int(np.count_nonzero(loops_np == 1))
        heads_np = np.ones(n, dtype=bool) if self.checks_every_loop else leaving_np | drafting_np
        # one host-to-device transfer of the row table
        table = np.stack([batch.slots[order], apos_np, loops_np - 1, gpos_np % N, heads_np, leaving_np,
                          drafting_np]).astype(np.int64)
        sl, ps, li, lane, _, leave_e, drafts = torch.as_tensor(table, device=dev)
        L = int(apos_np.max()) + 1
        cos, sin = m.cos[ps][:, None], m.sin[ps][:, None]  # against (rows, heads, hd)
        if enter == n:
            x = m.embed[self.tokens[sl, ps]]
        else:
            x = self.hidden[sl, lane]
            if enter:
                x[:enter] = m.embed[self.tokens[sl[:enter], ps[:enter]]]
        if enter:
            self.draft[sl[:enter], lane[:enter]] = -1
            if m.prelude:
                e = slice(0, enter)
                bias = self._bias(ps[e], L)
                zero = torch.zeros(enter, dtype=torch.long, device=dev)
                xe, ce, se = x[e], cos[e], sin[e]
                for layer, cache in zip(m.prelude, self.kv_pre):
                    xe = self._layer(xe, layer.w, layer.norm_in, layer.norm_post, [], ce, se,
                                     self._attend_rows(cache, zero, sl[e], ps[e], L, bias, None))
                x = xe if enter == n else torch.cat([xe, x[enter:]])
        # the shared block: one cache loop and a mask per row, built once for all its layers
        if self.kv_policy == "share":
            cl = torch.zeros_like(li)
            bias, writes = self._bias(ps, L), enter
        else:
            cl, writes = li, None
            self.valid[li, sl, ps] = True
            bias = self._bias(ps, L, self.valid[li, sl, :L])
        present, starts = np.unique(loops_np, return_index=True)
        stops = np.append(starts[1:], n)
        segs = Segments([(int(a), int(b), m.lora[int(k) - 1]) for k, a, b in zip(present, starts, stops)])
        if present.size == 1:
            k0 = int(present[0]) - 1
            n_in, n_post = m.norm_in[:, k0], m.norm_post[:, k0]  # (K, d)
        else:
            n_in, n_post = m.norm_in[:, li], m.norm_post[:, li]  # (K, rows, d): each row its loop's norms
        for j in range(m.block_n):
            x = self._layer(x, m.block[j], n_in[j], n_post[j], segs.at(j), cos, sin,
                            self._attend_rows(self.kv_block[j], cl, sl, ps, L, bias, writes))
        self.hidden[sl, lane] = x
        return self._heads(x, heads_np, order, sl, ps, li, lane, leave_e, drafts, cos, sin, L, loops_np, req_np,
                           gpos_np, bool(drafting_np.any()))

    def _heads(self, x, heads_np, order, sl, ps, li, lane, leave_e, drafts, cos, sin, L, loops_np, req_np, gpos_np,
               drafts_any):
        """Exit path of the head rows, the step's decisions on the device, one transfer back."""
        m, d = self.m, self.m.dims
        N, n = m.loops, order.size
        out = StepOutput(np.zeros(n, dtype=bool), np.full(n, -1, dtype=np.int64), np.zeros(n), np.zeros(n, dtype=bool),
                         np.zeros(n, dtype=bool))
        H = np.flatnonzero(heads_np)
        if not H.size:
            return out
        every = H.size == n
        hi = None if every else torch.as_tensor(H, device=m.device)

        def rows(t):
            return t if every else t[hi]

        xh, hs, hp, hc, hsn = rows(x), rows(sl), rows(ps), rows(cos), rows(sin)
        if m.coda:
            bias = self._bias(hp, L)
            zero = torch.zeros(H.size, dtype=torch.long, device=m.device)
            for layer, cache in zip(m.coda, self.kv_coda):
                xh = self._layer(xh, layer.w, layer.norm_in, layer.norm_post, [], hc, hsn,
                                 self._attend_rows(cache, zero, hs, hp, L, bias, None))
        logits = torch.nn.functional.linear(rms_norm(xh, m.final_norm, d.eps), m.embed)
        top, arg = logits.max(-1)
        conf = torch.exp(top.float() - torch.logsumexp(logits.float(), -1))
        hl, hlane, hdraft = rows(li), rows(lane), rows(drafts).bool()
        if self.live_threshold is not None:
            leave = (conf >= self.live_threshold) | (hl == N - 1)
        else:
            leave = rows(leave_e).bool()
        drafted = self.draft[hs, hlane]
        accepted = leave & (drafted == arg)
        if drafts_any:  # drafting rows keep their draft in their lane (known on the host: no sync)
            self.draft[hs, hlane] = torch.where(hdraft, arg, drafted)
        if self.free_running:  # the emitted token (or the draft) is the next position's input
            at = hp + 1
            self.tokens[hs, at] = torch.where(leave | hdraft, arg, self.tokens[hs, at])
        back = torch.stack([arg.double(), conf.double(), leave.double(), accepted.double()]).cpu().numpy()
        where = order[H]
        out.heads[where] = True
        out.token[where] = back[0].astype(np.int64)
        out.conf[where] = back[1]
        out.leave[where] = back[2] > 0
        out.accepted[where] = back[3] > 0
        if self.record:
            out.logits = logits.float().cpu()[torch.as_tensor(np.argsort(where))]
        if self.kv_policy == "propagate":
            early = (back[2] > 0) & (loops_np[H] < N) & (gpos_np[H] + 1 < self.gen_len[req_np[H]])
            if early.any():
                out.kv_proj_layers = self._propagate(xh_in=rows(x), rows_=np.flatnonzero(early), loops=loops_np[H],
                                                     hs=hs, hp=hp, cos=hc, sin=hsn)
        return out

    def _propagate(self, xh_in, rows_, loops, hs, hp, cos, sin) -> int:
        """kv_policy=propagate: every skipped loop's block layers get K/V at the exiting
        position, projected from the exiting hidden state by that layer's own K/V weights
        (and its own input norm and LoRA), so deeper loops attend to it. Returns the layer
        projections run (StepLoad.kv_proj_layers)."""
        m = self.m
        ri = torch.as_tensor(rows_, device=m.device)
        x, s, p, c, sn = xh_in[ri], hs[ri], hp[ri], cos[ri], sin[ri]
        exit_loop = loops[rows_]
        for k in range(2, m.loops + 1):  # 1-based loop k is skipped by rows that exited before it
            sel = np.flatnonzero(exit_loop < k)
            if not sel.size:
                continue
            si = None if sel.size == rows_.size else torch.as_tensor(sel, device=m.device)
            xs, ss, pp, cc, snn = (x, s, p, c, sn) if si is None else (x[si], s[si], p[si], c[si], sn[si])
            loop = torch.full_like(ss, k - 1)
            for j in range(m.block_n):
                h = rms_norm(xs, m.norm_in[j, k - 1], m.dims.eps)
                kk, vv = kv_projection(h, m.block[j], m.lora[k - 1][j], cc, snn, m.dims, m.q_width, m.kv_width)
                self.kv_block[j].write(loop, ss, pp, kk, vv)
            self.valid[loop, ss, pp] = True
        return int((m.loops - exit_loop).sum()) * m.block_n

    # -- profiling ---------------------------------------------------------------------
    def set_context(self, slot: int, position: int, request: int, valid_at: np.ndarray | None = None) -> None:
        """Profiling: pretend `slot` holds `request` at generated `position`, its earlier
        positions holding KV at every loop except where `valid_at` (loops, generated
        positions) says no. KV contents stay as they are: step time does not depend on them."""
        start = int(self.prompt_len[request]) - 1
        self.valid[:, slot] = False
        self.valid[:, slot, :start + position] = True
        if valid_at is not None and position:
            held = torch.as_tensor(valid_at[:, :position], device=self.valid.device)
            self.valid[:, slot, start:start + position] = held
