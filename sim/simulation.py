"""One simulation from a typed config: trace -> exits -> workload -> engine -> metrics.

This is the library entry point (`simulate(cfg)`); `sim.run` is the Hydra CLI
around it. Reading top to bottom follows a token from the trace to the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from sim.config import ExitConfig, RunConfig, validate
from sim.errors import ConfigError
from sim.cost import make_cost_model
from sim.engine import Engine, Timeline
from sim.layout import check_loops
from sim.memory import KVMemory
from sim.metrics import request_table, summarize
from sim.registry import exit_registry, scheduler_registry
from sim.slots import SlotState
from sim.step import CostedSteps, StepClock
from sim.synthetic import generate_trace
from sim.trace import Trace, load_trace
from sim.workload import Workload, build_workload


@dataclass
class SimulationResult:
    metrics: dict[str, Any]
    requests: pd.DataFrame
    timeline: Timeline
    # (request ids, positions, time) per emission, when simulate(log_emits=True)
    emit_log: list | None = None


def load_run_trace(cfg: RunConfig) -> Trace:
    t = cfg.trace
    if t.synthetic is not None:
        return generate_trace(t.synthetic, cfg.seed)
    return load_trace(t.path, t.num_loops)


def simulate(cfg: RunConfig, trace: Trace | None = None, timeline_steps: int = 0,
             log_emits: bool = False,
             clock: StepClock | Callable[[Workload, SlotState], StepClock] | None = None) -> SimulationResult:
    """Run one simulation. `trace` skips loading (sweeps reuse one trace);
    `timeline_steps` records the first steps slot by slot; `log_emits` every emission;
    `clock` replaces the config's cost model: a StepClock (e.g. to price one schedule
    several ways), or a factory `clock(workload, state)` for a real backend that needs
    both (traces.execute). The config is validated first (its seams become their
    variants' config classes)."""
    cfg = validate(cfg)
    trace = trace if trace is not None else load_run_trace(cfg)
    sched_cls = scheduler_registry.get(cfg.scheduler.name).impl
    m = cfg.model
    check_loops(trace, m)
    honoured = sched_cls.honours_exits and m.loops > 1
    exit_cfg = cfg.exit if honoured else ExitConfig("none", cfg.exit.kv_policy, cfg.exit.head_every_loop)
    live = exit_registry.get(exit_cfg.policy, "exit").meta.get("decided_live", False)
    if live and clock is None:
        raise ConfigError(f"exit={exit_cfg.policy} is decided by the real model as it runs: use python -m "
                          f"traces.execute exit={exit_cfg.policy} checkpoint=PATH (exit=confidence replays "
                          f"the confidences a trace recorded)")
    exits, wrong = sched_cls.token_exits(trace, exit_cfg, cfg.scheduler, m.loops)
    wl = build_workload(trace, exits, wrong, m.loops, cfg.workload, cfg.seed)
    memory = KVMemory(m, cfg.hardware, cfg.memory, cfg.exit.kv_policy)
    state = sched_cls.make_state(cfg.scheduler, wl, cfg.scheduler.batch_size, memory, cfg.exit.kv_policy,
                                 m.layers_per_block,
                                 checks_every_loop=exit_cfg.policy != "none" and cfg.exit.head_every_loop,
                                 edge_layers=bool(m.prelude_layers or m.coda_layers))
    state.stats.emit_log = [] if log_emits else None
    if clock is not None and not isinstance(clock, StepClock):
        clock = clock(wl, state)  # a real backend's factory
    clock = clock or CostedSteps(make_cost_model(cfg.cost, cfg.hardware, m))
    if live and not clock.decides_exits:
        raise ConfigError(f"exit={exit_cfg.policy} needs a step clock that decides exits (the real backend)")
    scheduler = sched_cls(state, cfg.scheduler)
    if scheduler.accepts_live and not clock.decides_acceptance:
        raise ConfigError(f"scheduler={cfg.scheduler.name} scheduler.accept=live is verified by the real model as "
                          f"it runs: use python -m traces.execute scheduler={cfg.scheduler.name} "
                          f"scheduler.accept=live --checkpoint PATH (scheduler.accept=trace replays the trace's "
                          f"correct_d)")
    engine = Engine(state, scheduler, clock,
                    progress=cfg.progress, timeline_steps=timeline_steps)
    makespan = engine.run()
    metrics: dict[str, Any] = {
        "scheduler": cfg.scheduler.name,
        "exit_policy": exit_cfg.policy,
        "exit_threshold": getattr(exit_cfg, "threshold", None),
        "kv_policy": cfg.exit.kv_policy,
        "batch_size": cfg.scheduler.batch_size,
        "model": m.name,
        "loops": m.loops,
        "lora_rank": m.lora_rank,
        "hardware": cfg.hardware.name,
        "cost": cfg.cost.kind,
        "arrival": cfg.workload.arrival,
        "rate": cfg.workload.rate,
        "seed": cfg.seed,
        "trace": trace.path,
        **summarize(wl, state, makespan, engine.busy_s),
        "accuracy_cost": float(wl.wrong.mean()) if wl.num_tokens else 0.0,
        **scheduler.extra_metrics(),
    }
    metrics = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    return SimulationResult(metrics, request_table(wl, state), engine.timeline, state.stats.emit_log)
