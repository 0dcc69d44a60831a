"""The accelerator as one SimPy process: one timeout per loop step.

Each iteration asks the scheduler which slots compute, lets it advance them (through
`SlotState`), asks the step clock how long that took, and waits that long in simulated
time. With nothing to compute it sleeps until the next arrival. One process and
one event per step, not one per request or token, is what keeps long workloads
fast (reference.md: ~40x cheaper than a process per request).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import simpy
from tqdm import tqdm

from sim.step import StepClock
from sim.errors import InvariantError
from sim.schedulers import Scheduler
from sim.slots import SlotState


@dataclass
class Timeline:
    """The first steps of a run, slot by slot, for plots of who computes what when."""

    start: list[float] = field(default_factory=list)
    duration: list[float] = field(default_factory=list)
    # per step: loop each slot ran (its deepest row's, under depthwise_spec), 0 = idle
    loop: list[np.ndarray] = field(default_factory=list)
    request: list[np.ndarray] = field(default_factory=list)  # per step: request in each slot, -1 = empty


class Engine:
    def __init__(self, state: SlotState, scheduler: Scheduler, clock: StepClock,
                 progress: bool = False, timeline_steps: int = 0):
        self.state = state
        self.scheduler = scheduler
        self.clock = clock  # costs a step (simulation) or runs it and measures it (real backend)
        self.progress = progress
        self.timeline_steps = timeline_steps
        self.timeline = Timeline()
        self.busy_s = 0.0
        self.env = simpy.Environment()

    def run(self) -> float:
        """Simulate until every request has finished; return the makespan in seconds."""
        # the bar's rate is wall-clock simulation speed, not the simulated throughput
        with tqdm(total=self.state.wl.num_tokens, unit=" tok", desc=f"{self.clock.verb} {self.scheduler.name}",
                  disable=None if self.progress else True, leave=False) as bar:
            self.env.process(self._serve(bar))
            self.env.run()
        self.scheduler.check_complete()
        return float(self.env.now)

    def _serve(self, bar: tqdm):
        env, st, sched, clock = self.env, self.state, self.scheduler, self.clock
        stats, n_requests = st.stats, st.wl.num_requests
        step_seconds, want_batch = clock.step_seconds, clock.needs_batch
        live = clock.decides_exits  # the real model decides who leaves at each loop (exit=live)
        accepting = sched.accepts_live  # ... and whether each final token equals its draft
        timeout, step, computing, after_step = env.timeout, sched.step, sched.computing, sched.after_step
        st.admit(env.now)
        shown = 0
        busy = 0.0
        refresh = 8 if want_batch else 512  # a real step takes milliseconds, a simulated one microseconds
        while stats.finished < n_requests:
            idx = computing()
            if idx.size == 0:
                nxt = st.next_arrival()
                if nxt is None or nxt < env.now:
                    raise InvariantError(f"stuck at t={env.now}: nothing to compute and no request to come")
                yield timeout(nxt - env.now)
                st.admit(env.now)
                continue
            recording = stats.steps < self.timeline_steps
            if recording:
                self._record(idx)
            load, exited, batch = step(idx, want_batch)
            dt = step_seconds(load, batch)
            if live:
                exited = st.settle_exits(idx, batch.loops, clock.leaving)
            if accepting:
                sched.settle_acceptance(clock.accepted)
            if not 0.0 < dt < math.inf:
                raise InvariantError(f"step time {dt} s is not a positive finite number")
            if recording:
                self.timeline.duration.append(dt)
            busy += dt
            yield timeout(dt)
            after_step(exited, env.now)
            if stats.steps % refresh == 0:
                bar.update(stats.emitted - shown)
                shown = stats.emitted
        bar.update(stats.emitted - shown)
        self.busy_s = busy

    def _record(self, idx: np.ndarray) -> None:
        st, tl = self.state, self.timeline
        tl.start.append(float(self.env.now))
        loop = np.zeros(st.batch_size, dtype=np.int64)
        loop[idx] = self.scheduler.shown_loops(idx)
        tl.loop.append(loop)
        tl.request.append(st.slots.req.copy())
