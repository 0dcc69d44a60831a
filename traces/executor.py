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
    `checks_every_loop` every other computing token runs them too (an exit check is
    what leaving is: how a confidence exit decides), as the simulator counts.

Token semantics: the trace's generated tokens are fed teacher-forced, so the real
run makes the same exit decisions as the simulation. Prefill covers the prompt
minus its last token; the decode of generated position p consumes sequence token
P-1+p (the last prompt token, then generated token p-1) and predicts token p, so
its logits after loop k are the ones the trace recorded for that token.

KV per loop: every (loop, block layer) has its own cache (slot, kv_head, position,
head_dim); prelude and coda layers one each (the coda's holds each position's latest
coda pass: a check writes it, the token's exit overwrites it last). kv_policy=ignore: a token that exits
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
from sim.cost.profiled import LOAD_COLUMNS, load_row
from sim.errors import ConfigError, InvariantError
from sim.kv import real_kv_policies
from sim.layout import ModelShape
from sim.step import StepBatch

from .llama import rms_norm
from .recursive import RecursiveLM

KV_POLICIES = real_kv_policies()  # those registered with `real=True` (sim/kv/)
# One row of the per-step log: the load a cost model sees, then the measured seconds
# (the profile and sim.cost_profiled use the same columns).
LOG_COLUMNS = LOAD_COLUMNS + ("seconds", "wall_seconds")


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
        self.prelude_n = spec.prelude_layers if spec else 0
        self.coda_n = spec.coda_layers if spec else 0
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
        # lora_all[j]: every loop's LoRA of block position j side by side (A stacked, B concatenated
        # along the rank), so a step mixing loops applies all deltas in two matmuls per linear, each
        # row masked to its own loop's rank block (traces/executor.py RealSteps._layer)
        self.lora_all: list[Delta | None] = []
        for j in range(K):
            parts = [self.lora[k][j] for k in range(N)]
            if any(p_ is None for p_ in parts):
                self.lora_all.append(None)
                continue
            cat = {f: torch.cat([getattr(p_, f) for p_ in parts], dim=0 if f.startswith("a_") else 1).contiguous()
                   for f in Delta.__dataclass_fields__}
            self.lora_all.append(Delta(**cat))
        self.embed = model.embed.detach().to(**to).contiguous()
        self.final_norm = model.final_norm.detach().to(**to)
        self.q_width = d.heads * d.head_dim
        self.kv_width = d.kv_heads * d.head_dim
        self.mlp = self.block[0].gate_up.shape[0] // 2 if K else self.prelude[0][0].gate_up.shape[0] // 2
        hd = d.head_dim
        self.inv_freq = 1.0 / (d.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32,
                                                             device=self.device) / hd))

    def layout(self) -> dict:
        """This model's `sim.layout.ModelShape`, as the dict a profile records and must match
        to price this model (sim/cost/profiled.py)."""
        d = self.dims
        return ModelShape(loops=self.loops, layers_per_block=self.block_n, prelude_layers=self.prelude_n,
                          coda_layers=self.coda_n, d_model=d.hidden, n_heads=d.heads, n_kv_heads=d.kv_heads,
                          head_dim=d.head_dim, d_mlp=self.mlp, vocab=d.vocab,
                          lora_rank=int(self.lora[0][0].a_o.shape[0]) if self.lora and self.lora[0] and self.lora[0][0]
                          else 0).as_dict()

    def rope(self, positions: torch.Tensor):
        """cos, sin of shape (n, 1, head_dim) for one position per row."""
        f = positions.float()[:, None] * self.inv_freq
        emb = torch.cat([f, f], dim=-1)[:, None]
        return emb.cos().to(self.dtype), emb.sin().to(self.dtype)


def step_timer(device: torch.device, timer: str = "auto") -> str:
    """Which clock times a step. "process": CPU time of this process, used by default on a
    CPU with one torch thread: on a shared machine it leaves out the time the OS gives
    other processes, which wall time counts as if the step were slower (the step's own
    work, cache and memory contention included, is still measured). "wall": elapsed time,
    for CUDA (synchronized) and multi-threaded runs, where CPU time is not step time."""
    if timer not in ("auto", "process", "wall"):
        raise ConfigError(f"timer={timer!r}: use auto, process or wall")
    if timer == "auto":
        return "process" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    return timer


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
                 record: bool = False, timer: str = "auto", live_threshold: float | None = None):
        if kv_policy not in KV_POLICIES:
            raise ConfigError(f"exit.kv_policy={kv_policy!r} is not executed for real; "
                              f"the real backend runs {', '.join(KV_POLICIES)}")
        if live_threshold is not None and not checks_every_loop:
            raise ConfigError("exit=live needs an exit check after every loop (exit.head_every_loop=true)")
        m = self.m = packed
        # exit=live: a token leaves once its confidence reaches the threshold (sim.exit_live);
        # `leaving` answers the engine after each step, `live_log` keeps every exit taken
        self.decides_exits = live_threshold is not None
        self.live_threshold = live_threshold
        self.leaving = np.zeros(0, dtype=bool)
        self.live_log: list[tuple[np.ndarray, ...]] = []  # (requests, positions, loops, conf, top-1) per step
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

        def cache(loops):  # (loop, slot, kv_head, position, head_dim): one tensor over loops, so
            shape = (loops, B, d.kv_heads, t_max, d.head_dim)  # one gather serves a mixed-loop step
            return torch.zeros(shape, dtype=dt, device=dev), torch.zeros(shape, dtype=dt, device=dev)

        self.kv_pre = [cache(1) for _ in m.prelude]
        self.kv_coda = [cache(1) for _ in m.coda]
        self.kv_block = [cache(kv_loops) for _ in range(m.block_n)]
        # valid[k][slot, t]: position t has KV at loop k+1 (kv_policy=ignore)
        self.valid = torch.zeros(kv_loops, B, t_max, dtype=torch.bool, device=dev)
        self.hidden = torch.zeros(B, d.hidden, dtype=dt, device=dev)  # residual stream between loops
        self.t_arange = torch.arange(t_max, device=dev)
        self.records: list[dict] | None = [] if record else None
        self.cuda = dev.type == "cuda"
        self.log: list[tuple] = []  # (load fields..., seconds, wall seconds) per step: the per-step log
        self.timer = step_timer(dev, timer)

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

    # -- StepClock ------------------------------------------------------------------
    @torch.inference_mode()
    def step_seconds(self, load: StepLoad, batch: StepBatch | None) -> float:
        if batch is None:
            raise InvariantError("the real backend needs the step's batch (needs_batch=True)")
        if self.cuda:
            torch.cuda.synchronize()
        w0, c0 = time.perf_counter(), time.process_time()
        self.run_step(batch)
        if self.cuda:
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        dt = cpu if self.timer == "process" else wall
        self.log.append(load_row(load) + (dt, wall))
        return max(dt, 1e-9)

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
        for (w, n_in, n_post), (K, V) in zip(m.prelude, self.kv_pre):
            x = self._prefill_layer(x, w, None, n_in, n_post, (K[0], V[0]), (K[0], V[0]), sl, cos, sin, causal)
        share = self.kv_policy == "share"
        for k in range(m.loops):
            for j in range(m.block_n):
                K, V = self.kv_block[j]
                write = (K[k], V[k]) if not share or k == 0 else None
                read = (K[0], V[0]) if share else (K[k], V[k])
                x = self._prefill_layer(x, m.block[j], m.lora[k][j], m.norm_in[j][k], m.norm_post[j][k],
                                        write, read, sl, cos, sin, causal)
        for (w, n_in, n_post), (K, V) in zip(m.coda, self.kv_coda):
            x = self._prefill_layer(x, w, None, n_in, n_post, (K[0], V[0]), (K[0], V[0]), sl, cos, sin, causal)

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

    def _plan(self, cache_loop: np.ndarray, slots_np: np.ndarray, pos_np: np.ndarray, validity: bool,
              writes: int) -> "_Plan":
        """How the rows of a step attend: cache loop, slot and position per row; the first
        `writes` rows write their K/V (the others only read, kv_policy=share); one additive
        mask for all rows, built once per step and shared by every layer."""
        dev, d = self.m.device, self.m.dims
        n = slots_np.size
        L = int(pos_np.max()) + 1
        li, sl, ps = (torch.as_tensor(a, device=dev) for a in (cache_loop, slots_np, pos_np))
        view = None
        if np.all(cache_loop == cache_loop[0]) and np.all(np.diff(slots_np) == 1):
            view = (int(cache_loop[0]), int(slots_np[0]))  # one loop, consecutive slots: read a view, no copy
        mask = self.t_arange[:L][None, :] <= ps[:, None]
        if validity:
            mask = mask & self.valid[li, sl, :L]
        bias = torch.zeros(mask.shape, dtype=self.m.dtype, device=dev).masked_fill_(~mask, float("-inf"))
        rep = d.heads // d.kv_heads
        bias = bias[:, None, None, :].expand(n, d.kv_heads, rep, L).reshape(n * d.kv_heads, rep, L)
        w = slice(0, writes)
        return _Plan(n, writes, li[w], sl[w], ps[w], li, sl, view, L, bias)

    def _lora_masks(self, loops_np: np.ndarray, j: int) -> dict[str, torch.Tensor]:
        """Per row, ones over its own loop's LoRA rank block of the loop-concatenated LoRA."""
        m = self.m
        onehot = torch.as_tensor(loops_np[:, None] - 1 == np.arange(m.loops)[None, :], device=m.device).to(m.dtype)
        lo = m.lora[0][j]
        return {k: onehot.repeat_interleave(getattr(lo, f"a_{k}").shape[0], dim=1)
                for k in ("qkv", "o", "gu", "down")}

    def decode(self, batch: StepBatch) -> None:
        m, d = self.m, self.m.dims
        dev = m.device
        order = np.argsort(batch.loops, kind="stable")
        slots_np = batch.slots[order]
        loops_np = batch.loops[order]
        req_np = batch.requests[order]
        leaving_np = batch.leaving[order]
        pos_np = self.prompt_len[req_np] - 1 + batch.positions[order]  # absolute position of the input
        n = slots_np.size
        n_enter = int(np.count_nonzero(loops_np == 1))
        slots = torch.as_tensor(slots_np, device=dev)
        pos = torch.as_tensor(pos_np, device=dev)
        cos, sin = m.rope(pos)
        # residual stream: loop-1 tokens start from the embedding (+ prelude), others resume
        x = torch.empty(n, d.hidden, dtype=m.dtype, device=dev) if n_enter == n else self.hidden[slots]
        if n_enter:
            ids = self.flat[torch.as_tensor(self.seq_off[req_np[:n_enter]] + pos_np[:n_enter], device=dev)]
            xe = m.embed[ids]
            if m.prelude:
                plan = self._plan(np.zeros(n_enter, np.int64), slots_np[:n_enter], pos_np[:n_enter], False, n_enter)
                c, s = cos[:n_enter], sin[:n_enter]
                for (w, n_in, n_post), kv in zip(m.prelude, self.kv_pre):
                    xe = self._layer(xe, w, None, None, n_in, n_post, plan, kv, c, s)
            x[:n_enter] = xe
        share = self.kv_policy == "share"
        present = np.unique(loops_np)
        if share:  # every loop reads loop 1's KV; only loop-1 rows (sorted first) write it
            plan = self._plan(np.zeros(n, np.int64), slots_np, pos_np, False, n_enter)
        else:  # this step's tokens now hold KV at their loop; deeper loops see only what reached them
            self.valid[torch.as_tensor(loops_np - 1, device=dev), slots, pos] = True
            plan = self._plan(loops_np - 1, slots_np, pos_np, True, n)
        if present.size == 1:
            k0 = int(present[0]) - 1
            norm_in = [m.norm_in[j][k0] for j in range(m.block_n)]
            norm_post = [m.norm_post[j][k0] for j in range(m.block_n)]
            loras = [(m.lora[k0][j], None) for j in range(m.block_n)]
        else:  # tokens of several loops: each row's norms gathered, LoRA deltas batched over loops
            lidx = torch.as_tensor(loops_np - 1, device=dev)
            norm_in = [m.norm_in[j][lidx] for j in range(m.block_n)]
            norm_post = [m.norm_post[j][lidx] for j in range(m.block_n)]
            masks = self._lora_masks(loops_np, 0) if m.lora_all[0] is not None else None
            loras = [(m.lora_all[j], masks) for j in range(m.block_n)]
        for j in range(m.block_n):
            lo, masks = loras[j]
            x = self._layer(x, m.block[j], lo, masks, norm_in[j], norm_post[j], plan, self.kv_block[j], cos, sin)
        self.hidden[slots] = x
        # leaving tokens (with exit checks every loop: every token): coda, final norm, head
        rows = np.arange(n) if self.checks_every_loop else np.flatnonzero(leaving_np)
        if not rows.size:
            return
        ri = None if rows.size == n else torch.as_tensor(rows, device=dev)
        heads = x if ri is None else x[ri]
        if m.coda:
            plan = self._plan(np.zeros(rows.size, np.int64), slots_np[rows], pos_np[rows], False, rows.size)
            c, s = (cos, sin) if ri is None else (cos[ri], sin[ri])
            for (w, n_in, n_post), kv in zip(m.coda, self.kv_coda):
                heads = self._layer(heads, w, None, None, n_in, n_post, plan, kv, c, s)
        logits = F.linear(rms_norm(heads, m.final_norm, d.eps), m.embed)
        top, arg = logits.max(-1)
        conf = torch.exp(top.float() - torch.logsumexp(logits.float(), -1))  # what a confidence exit reads
        if self.decides_exits:
            leave = (conf.cpu().numpy() >= self.live_threshold) | (loops_np == m.loops)
            self.leaving = np.empty(n, dtype=bool)
            self.leaving[order] = leave
            self.live_log.append((req_np[leave], batch.positions[order][leave], loops_np[leave],
                                  conf.cpu().numpy()[leave], arg.cpu().numpy()[leave]))
        if self.records is not None:
            self.records.append({"requests": req_np[rows], "positions": batch.positions[order][rows],
                                 "loops": loops_np[rows], "leaving": leaving_np[rows],
                                 "logits": logits.float().cpu(), "conf": conf.cpu()})

    def _layer(self, x, w: Dense, lo: Delta | None, masks, n_in, n_post, plan: "_Plan", cache, cos, sin):
        """One decoder layer over all rows of the step: shared weights applied once, LoRA deltas
        (one loop's, or all loops' with each row masked to its own), attention over the cache."""
        m, d = self.m, self.m.dims
        n = x.shape[0]

        def delta(h, kind):
            t = F.linear(h, getattr(lo, f"a_{kind}"))
            if masks is not None:
                t = t * masks[kind]
            return F.linear(t, getattr(lo, f"b_{kind}"))

        h = _norm_rows(x, n_in, d.eps)
        qkv = F.linear(h, w.qkv)
        if lo is not None:
            qkv += delta(h, "qkv")
        q, k, v = qkv.split([m.q_width, m.kv_width, m.kv_width], dim=-1)
        q = _rope(q.view(n, d.heads, d.head_dim), cos, sin)
        k = _rope(k.view(n, d.kv_heads, d.head_dim), cos, sin)
        v = v.view(n, d.kv_heads, d.head_dim)
        att = self._attend(plan, cache, q, k, v).reshape(n, m.q_width)
        o = F.linear(att, w.o)
        if lo is not None:
            o += delta(att, "o")
        x = x + o
        h = _norm_rows(x, n_post, d.eps)
        gu = F.linear(h, w.gate_up)
        if lo is not None:
            gu += delta(h, "gu")
        g_, u = gu.chunk(2, dim=-1)
        act = F.silu(g_) * u
        out = F.linear(act, w.down)
        if lo is not None:
            out += delta(act, "down")
        return x + out

    def _attend(self, plan: "_Plan", cache, q, k, v):
        """Grouped-query attention of one token per row over its (loop, slot) cache, as two
        batched matmuls with an additive mask (torch's CPU SDPA kernel is 4-40x slower for
        one query per sequence with a mask on this machine)."""
        d = self.m.dims
        K, V = cache
        n, rep = plan.n, d.heads // d.kv_heads
        if plan.writes:
            K[plan.w_loop, plan.w_slot, :, plan.w_pos] = k[:plan.writes]
            V[plan.w_loop, plan.w_slot, :, plan.w_pos] = v[:plan.writes]
        if plan.view is not None:
            lp, s0 = plan.view
            kk, vv = K[lp, s0:s0 + n, :, :plan.L], V[lp, s0:s0 + n, :, :plan.L]
        else:
            kk, vv = K[plan.loop, plan.slot, :, :plan.L], V[plan.loop, plan.slot, :, :plan.L]
        kk = kk.reshape(n * d.kv_heads, plan.L, d.head_dim)
        vv = vv.reshape(n * d.kv_heads, plan.L, d.head_dim)
        qq = q.reshape(n * d.kv_heads, rep, d.head_dim)
        s = torch.baddbmm(plan.bias, qq, kk.transpose(1, 2), alpha=d.head_dim ** -0.5)
        p = torch.softmax(s, -1, dtype=torch.float32).to(q.dtype)
        return torch.bmm(p, vv).view(n, d.heads, d.head_dim)


@dataclass
class _Plan:
    n: int
    writes: int  # the first `writes` rows write their K/V
    w_loop: torch.Tensor
    w_slot: torch.Tensor
    w_pos: torch.Tensor
    loop: torch.Tensor  # cache loop each row reads
    slot: torch.Tensor
    view: tuple[int, int] | None  # (loop, first slot) when all rows read one loop's consecutive slots
    L: int  # positions read: the deepest row's position + 1
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
