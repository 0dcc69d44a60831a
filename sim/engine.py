"""The accelerator as one SimPy process: one timeout per loop step.

Each iteration asks the scheduler which tokens compute, lets `SlotState` advance
them, asks the cost model how long that took, and waits that long in simulated
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
    loop: list[np.ndarray] = field(default_factory=list)  # per step: loop each slot ran, 0 = idle
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
        with tqdm(total=self.state.wl.num_tokens, unit=" tok simulated", desc=f"simulating {self.scheduler.name}",
                  disable=None if self.progress else True, leave=False) as bar:
            self.env.process(self._serve(bar))
            self.env.run()
        self.state.check_complete()
        return float(self.env.now)

    def _serve(self, bar: tqdm):
        env, st, sched = self.env, self.state, self.scheduler
        step_seconds, want_batch = self.clock.step_seconds, self.clock.needs_batch
        live = getattr(self.clock, "decides_exits", False)
        timeout, run, computing, after_step = env.timeout, st.run, sched.computing, sched.after_step
        st.admit(env.now)
        shown = 0
        busy = 0.0
        while st.finished < st.n_requests:
            idx = computing()
            if idx.size == 0:
                nxt = st.next_arrival()
                if nxt is None or nxt < env.now:
                    raise InvariantError(f"stuck at t={env.now}: nothing to compute and no request to come")
                yield timeout(nxt - env.now)
                st.admit(env.now)
                continue
            recording = st.steps < self.timeline_steps
            if recording:
                self._record(idx)
            load, exited, batch = run(idx, want_batch)
            dt = step_seconds(load, batch)
            if live:  # the real model decided who leaves at this loop
                exited = st.settle_exits(idx, batch.loops, self.clock.leaving)
            if not 0.0 < dt < math.inf:
                raise InvariantError(f"step time {dt} s is not a positive finite number")
            if recording:
                self.timeline.duration.append(dt)
            busy += dt
            yield timeout(dt)
            after_step(exited, env.now)
            if st.steps % 512 == 0:
                bar.update(st.emitted - shown)
                shown = st.emitted
        bar.update(st.emitted - shown)
        self.busy_s = busy

    def _record(self, idx: np.ndarray) -> None:
        st, tl = self.state, self.timeline
        tl.start.append(float(self.env.now))
        loop = np.zeros(st.batch_size, dtype=np.int64)
        loop[idx] = st.loop[idx]
        tl.loop.append(loop)
        tl.request.append(st.req.copy())
