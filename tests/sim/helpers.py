"""Small builders shared by the simulator tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.config import ModelConfig, RunConfig
from sim.trace import Trace, trace_from_frame
from sim.validate import validate


def trace_frame(exits: list[list[int]], prompt_lens: list[int] | None = None) -> pd.DataFrame:
    """A trace table from per-request exit-loop lists."""
    prompt_lens = prompt_lens or [4] * len(exits)
    rows = [(r, j, prompt_lens[r], e) for r, req in enumerate(exits) for j, e in enumerate(req)]
    return pd.DataFrame(rows, columns=["request_id", "position", "prompt_len", "exit_loop"])


def make_trace(exits: list[list[int]], num_loops: int, prompt_lens: list[int] | None = None) -> Trace:
    return trace_from_frame(trace_frame(exits, prompt_lens), "<test>", num_loops)


def random_exits(rng: np.random.Generator, n_req: int, max_len: int, num_loops: int) -> list[list[int]]:
    return [list(rng.integers(1, num_loops + 1, size=rng.integers(1, max_len + 1))) for _ in range(n_req)]


def analytic_config(scheduler: str, batch_size: int, num_loops: int, step_s: float = 1e-3,
                    exit_policy: str = "oracle", kv_policy: str = "ignore") -> RunConfig:
    """cost=constant, memory unlimited, offline: the setting of the closed forms."""
    cfg = RunConfig()
    cfg.progress = False
    cfg.scheduler.name = scheduler
    cfg.scheduler.batch_size = batch_size
    cfg.exit.policy = exit_policy
    cfg.exit.kv_policy = kv_policy
    cfg.cost.kind = "constant"
    cfg.cost.loop_step_s = step_s
    cfg.memory.limit = False
    cfg.model = looped_model(num_loops)
    return validate(cfg)


def looped_model(num_loops: int) -> ModelConfig:
    """SmolLM2's shape with a block of 10 layers looped `num_loops` times (any count:
    no source model to match)."""
    return ModelConfig(name=f"smollm2_135m_{num_loops}x10", source_layers=None, loops=num_loops,
                       layers_per_block=10, prelude_layers=0, coda_layers=0)
