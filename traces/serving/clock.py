"""`RealSteps`: the engine's `StepClock` of the real backend. It runs each step on the model
(`runner.StepRunner`), times it and logs it; the engine then advances by the measured time.

So a real run and a simulated one differ only in where a step's duration comes from: the
engine, schedulers and slot bookkeeping are the simulator's. Capabilities (sim/step.py):
`decides_exits` with exit=live (after each step `leaving` says which rows' tokens left),
`decides_acceptance` with depthwise_spec's scheduler.accept=live (after each step
`accepted` says which leaving rows' final token equals their draft).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from sim.cost import StepLoad
from sim.cost.profiled import LOAD_COLUMNS, load_row
from sim.errors import ConfigError, InvariantError
from sim.step import StepBatch, StepClock

from .kv import real_kv_policies
from .runner import StepRunner
from .weights import PackedModel

# One row of the per-step log: the load a cost model sees, then the measured seconds
# (the profile and sim/cost/profiled.py use the same columns).
LOG_COLUMNS = LOAD_COLUMNS + ("seconds", "wall_seconds")
PROJ = LOAD_COLUMNS.index("kv_proj_layers")


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


class RealSteps(StepClock):
    """Runs, times and logs each engine step. `record` keeps every head's logits (tests compare
    them with a token-by-token reference); `emitted` keeps (request, position, token) of every
    token that left (free-running: the generated text)."""

    verb = "executing"

    needs_batch = True
    decides_exits = False
    decides_acceptance = False

    def __init__(self, packed: PackedModel, batch_size: int, prompt_len: np.ndarray,
                 sequences: list[np.ndarray], kv_policy: str = "ignore", checks_every_loop: bool = False,
                 record: bool = False, timer: str = "auto", live_threshold: float | None = None,
                 free_running: bool = False, accept_live: bool = False):
        self.runner = StepRunner(packed, batch_size, prompt_len, sequences, kv_policy, checks_every_loop,
                                 free_running, live_threshold, record)
        self.decides_exits = live_threshold is not None
        self.decides_acceptance = accept_live
        self.live_threshold = live_threshold
        self.leaving = np.zeros(0, dtype=bool)
        self.accepted = np.zeros(0, dtype=bool)
        self.live_log: list[tuple[np.ndarray, ...]] = []  # (requests, positions, loops, conf, top-1) per step
        self.emitted: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.records: list[dict] | None = [] if record else None
        self.cuda = packed.device.type == "cuda"
        self.log: list[tuple] = []  # (load fields..., seconds, wall seconds) per step
        self.timer = step_timer(packed.device, timer)

    def set_context(self, *args, **kw) -> None:
        self.runner.set_context(*args, **kw)

    def step_seconds(self, load: StepLoad, batch: StepBatch | None) -> float:
        if batch is None:
            raise InvariantError("the real backend needs the step's batch (needs_batch=True)")
        if self.cuda:
            torch.cuda.synchronize()
        w0, c0 = time.perf_counter(), time.process_time()
        out = self.runner.run(batch)
        if self.cuda:
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        dt = cpu if self.timer == "process" else wall
        row = load_row(load)
        if out is not None:  # what ran (under exit=live the engine priced the step before the model chose exits)
            row = row[:PROJ] + (out.kv_proj_layers,) + row[PROJ + 1:]
        self.log.append(row + (dt, wall))
        if out is not None:
            self._keep(batch, out)
        return max(dt, 1e-9)

    def _keep(self, batch: StepBatch, out) -> None:
        """The step's answers to the engine and what the run reports, off the clock."""
        leave = out.leave
        self.leaving, self.accepted = leave, out.accepted & leave
        if leave.any():
            self.emitted.append((batch.requests[leave], batch.positions[leave], out.token[leave]))
        if self.decides_exits:
            self.live_log.append((batch.requests[leave], batch.positions[leave], batch.loops[leave],
                                  out.conf[leave], out.token[leave]))
        if self.records is not None and out.logits is not None:
            h = out.heads
            self.records.append({"requests": batch.requests[h], "positions": batch.positions[h],
                                 "loops": batch.loops[h], "leaving": batch.leaving[h], "logits": out.logits,
                                 "conf": torch.as_tensor(out.conf[h])})

    def generated(self):
        """(request, position, token) arrays of every emitted token, sorted by request and position."""
        if not self.emitted:
            z = np.zeros(0, dtype=np.int64)
            return z, z, z
        r, p, t = (np.concatenate(c) for c in zip(*self.emitted))
        o = np.lexsort((p, r))
        return r[o], p[o], t[o]


def warm_up(packed: PackedModel, kv_policy: str = "ignore", checks_every_loop: bool = False,
            batch: int = 8, steps: int = 8) -> None:
    """A few throwaway steps (prefill, mixed loops, leaving tokens, heads) so that one-time
    costs (kernel selection, first touch of buffers) do not land in a timed step."""
    rng = np.random.default_rng(0)
    P, G = 40, steps
    seqs = [rng.integers(0, packed.dims.vocab, size=P + G) for _ in range(batch)]
    rs = RealSteps(packed, batch, np.full(batch, P), seqs,
                   kv_policy if kv_policy in real_kv_policies() else "ignore", checks_every_loop)
    slots = np.arange(batch)
    for s in range(steps):
        loops = 1 + (slots + s) % packed.loops if s else np.ones(batch, dtype=np.int64)
        rs.runner.run(StepBatch(slots, slots.copy(), np.full(batch, s // max(packed.loops, 1)), loops,
                                loops == packed.loops, slots.copy() if s == 0 else np.zeros(0, np.int64)))
