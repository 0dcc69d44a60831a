"""`python -m traces.execute [sim.run overrides] [device=cpu threads=1 out=DIR ...]`:
run a workload for real, with the simulator's own engine and schedulers.

Everything on the command line is a `key=value` override: sim.run's (same config tree,
same composition) and this command's own keys (`ExecuteOptions`; `--help` lists both).
The engine, schedulers and slot bookkeeping are the simulator's, only the step clock
is `traces.serving.clock.RealSteps`, which runs each step on the recursive SmolLM2 and
reports its measured time. Writes to out= (default runs/execute/<date>/<time>_<scheduler>):
metrics.json (sim.run's metrics plus `backend: real` and how it was measured),
requests.parquet, config.yaml and steps.parquet (per step: the load the cost model
sees and the measured seconds). With `exit=live` (and an uptrained `checkpoint=PATH`)
the model's own confidence decides each exit; exits.parquet then compares every
token's live exit with the trace's. The makespan is the sum of measured step times:
the engine's clock. On a CPU with one torch thread a step is timed by the process's
CPU time (see traces.serving.clock.step_timer: a shared machine's other jobs do not
count); wall time is logged beside it.
`free_running=true`: each request decodes its own greedy continuation (its inputs are its
emitted tokens, not the trace's) for as many tokens as the trace gives it, written to
generated.parquet (request_id, position, token). `scheduler=continuous exit=none
free_running=true` is full-depth greedy decoding; `scheduler=depthwise_spec
scheduler.accept=live free_running=true` verifies the model's own drafts and emits the same
tokens (lossless); `exit=live free_running=true` is what a confidence exit really outputs
(docs/executor.md).
"""
from __future__ import annotations

import datetime as dt
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .cli import HELP_FLAGS, check_device, fail, key_value_usage, parse_key_values, torch_missing


@dataclass
class ExecuteOptions:
    """traces.execute's own keys, beside sim.run's overrides: the one place they are
    declared (a new one is a field here, with its help, read as `opts.NAME` in main)."""

    device: str = field(default="cpu", metadata={"help": "torch device: cpu, cuda, cuda:1"})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 where native, else fp32) | bfloat16 | float32"})
    threads: int = field(default=1, metadata={"help": "torch threads"})
    cpus: str = field(default="0", metadata={"help": "CPUs to pin to, e.g. 0 or 0,1 ('' = no pinning)"})
    checkpoint: Optional[str] = field(default=None, metadata={"help": "uptrained checkpoint (default: the SVD conversion)"})
    source: str = field(default="gguf", metadata={"help": "base model (traces.base_model.load_base)"})
    out: Optional[str] = field(default=None, metadata={"help": "output dir (default runs/execute/<date>/<time>_<scheduler>)"})
    pause: bool = field(default=True, metadata={"help": "pause the background uptraining job (traces/quiet.py)"})
    timer: str = field(default="auto", metadata={"help": "step clock: auto | process | wall"})
    free_running: bool = field(default=False, metadata={
        "help": "decode each request's own greedy continuation (writes generated.parquet)"})


OPTION_CHOICES = {"dtype": ("auto", "bfloat16", "float32"), "timer": ("auto", "process", "wall")}


def usage() -> str:
    from sim.run import options_help

    return (f"usage: python -m traces.execute [KEY=VALUE ...]\n\n{__doc__.split(chr(10) * 2)[0]}\n\n"
            f"traces.execute's keys (default shown):\n{key_value_usage(ExecuteOptions)}\n\n"
            f"and every sim.run override (python -m sim.run --help); its config groups:\n{options_help()}\n")


@dataclass
class Executed:
    metrics: dict[str, Any]
    requests: Any  # DataFrame
    steps: Any  # DataFrame, one row per step
    emit_log: list | None = None
    records: list | None = None
    exits: Any = None  # exit=live: DataFrame, one row per token (traces.live_exits)
    generated: Any = None  # free_running=true: DataFrame (request_id, position, token)


def compose(overrides: list[str]):
    """The same composed config as `python -m sim.run <overrides>` (hydra keys dropped);
    a mistake in it is one ConfigError line."""
    import sim.run  # noqa: F401  (registers the config schemas and resolvers sim.run uses)
    from sim.api import compose_raw

    return compose_raw(overrides)


# Schedulers whose rows a free-running run can feed: a row enters loop 1 only once its
# input token (emitted, or a draft) exists. `speculative` replays acceptance from the trace
# in lockstep rounds, which its own tokens would contradict.
FREE_RUNNING_SCHEDULERS = ("static", "continuous", "sync_exit", "depthwise", "depthwise_spec")


def accepts_live(cfg) -> bool:
    """depthwise_spec with scheduler.accept=live: the model's own final loop verifies its drafts."""
    return cfg.scheduler.name == "depthwise_spec" and getattr(cfg.scheduler, "accept", "trace") == "live"


def check_free_running(cfg) -> None:
    """ConfigError unless a free-running run can serve this config."""
    from sim.errors import ConfigError
    from sim.registry import scheduler_registry
    honours = cfg.scheduler.name in scheduler_registry and \
        scheduler_registry.get(cfg.scheduler.name).impl.honours_exits  # else exits are ignored anyway
    if honours and cfg.exit.policy in ("oracle", "confidence"):
        raise ConfigError(f"free_running=true with exit={cfg.exit.policy}: a free-running run has no trace exits "
                          "to replay; use exit=none or exit=live")
    if cfg.scheduler.name not in FREE_RUNNING_SCHEDULERS:
        raise ConfigError(f"free_running=true with scheduler={cfg.scheduler.name}: not served free-running; "
                          f"use one of {', '.join(FREE_RUNNING_SCHEDULERS)}")
    if cfg.scheduler.name == "depthwise_spec" and not accepts_live(cfg):
        raise ConfigError("free_running=true with scheduler=depthwise_spec needs scheduler.accept=live "
                          "(the trace's acceptance does not hold for the model's own tokens)")


def run_real(cfg, packed, tokenizer=None, log_emits: bool = False, record: bool = False,
             warm: bool = True, trace=None, timer: str = "auto", free_running: bool = False,
             sequences: list | None = None) -> Executed:
    """One real run of a typed RunConfig on a `PackedModel`; the engine is sim's.
    `tokenizer` maps a recorded trace's prompts to ids (None: random ids of the same
    lengths; `sequences` gives every workload request's ids instead); `record` keeps every
    head's logits; `warm` runs throwaway steps first; `free_running` decodes each request's
    own continuation (Executed.generated)."""
    import pandas as pd

    from sim.simulation import load_run_trace, simulate

    from .serving.clock import LOG_COLUMNS, RealSteps, warm_up
    from .serving.inputs import request_sequences

    if free_running:
        check_free_running(cfg)
    trace = trace if trace is not None else load_run_trace(cfg)
    checks = cfg.exit.head_every_loop and cfg.exit.policy != "none"
    made: list[tuple] = []

    def clock(wl, state):
        seqs = sequences if sequences is not None else request_sequences(trace, wl, tokenizer,
                                                                          packed.dims.vocab, cfg.seed)
        live = cfg.exit.policy == "live" and state.checks_every_loop  # a scheduler honouring exits
        rs = RealSteps(packed, cfg.scheduler.batch_size, wl.prompt_len, seqs, cfg.exit.kv_policy,
                       checks_every_loop=state.checks_every_loop, record=record, timer=timer,
                       live_threshold=cfg.exit.threshold if live else None, free_running=free_running,
                       accept_live=accepts_live(cfg))
        made.append((rs, wl, seqs))
        return rs

    if warm:
        warm_up(packed, cfg.exit.kv_policy, checks)
    t0 = time.perf_counter()
    result = simulate(cfg, trace=trace, log_emits=log_emits, clock=clock)
    wall = time.perf_counter() - t0
    rs, wl, seqs = made[0]
    steps = pd.DataFrame(rs.log, columns=list(LOG_COLUMNS))
    metrics = dict(result.metrics)
    metrics.update({"backend": "real", "cost": None, "hardware": None, "wall_s": wall,
                    "device": str(packed.device), "dtype": str(packed.dtype).replace("torch.", ""),
                    "step_s_median": float(steps.seconds.median()) if len(steps) else None,
                    "step_timer": rs.timer, "wall_steps_s": float(steps.wall_seconds.sum())})
    exits = None
    if rs.decides_exits:
        from .live_exits import live_exit_summary, live_exit_table
        exits = live_exit_table(rs.live_log, trace, wl, rs.live_threshold, seqs)
        metrics.update(live_exit_summary(exits, cfg.model.loops))
    generated = None
    if free_running:
        r, p, t = rs.generated()
        generated = pd.DataFrame({"request_id": r, "position": p, "token": t})
        metrics["free_running"] = True
    return Executed(metrics, result.requests, steps, result.emit_log, rs.records, exits, generated)


def parse(argv: list[str]):
    """(ExecuteOptions, typed RunConfig, composed config, trace): every input checked,
    nothing loaded beyond the trace; a ConfigError/TraceError for any mistake. The
    config's `progress` (default true) shows the engine's bar, in tokens, over the real steps."""
    from sim.config import load_config
    from sim.errors import ConfigError
    from sim.simulation import load_run_trace

    opts, overrides = parse_key_values(argv, ExecuteOptions, "traces.execute")
    for key, valid in OPTION_CHOICES.items():
        if getattr(opts, key) not in valid:
            raise ConfigError(f"{key}={getattr(opts, key)!r} is not known; valid: {', '.join(valid)}")
    raw = compose(overrides)
    cfg = load_config(raw)
    if opts.checkpoint and not Path(opts.checkpoint).is_file():
        raise ConfigError(f"checkpoint={opts.checkpoint}: no such file")
    if cfg.exit.policy == "live" and not opts.checkpoint:
        raise ConfigError("exit=live needs checkpoint=PATH: the SVD conversion's confidences are not a "
                          "trained exit rule")
    if opts.free_running:
        check_free_running(cfg)
    check_device(opts.device, f"device={opts.device}")
    return opts, cfg, raw, load_run_trace(cfg)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in HELP_FLAGS for a in argv):
        print(usage())
        return 0
    if torch_missing("traces.execute"):
        return 2
    from sim.errors import UserError
    from sim.run import format_summary, write_atomic, write_outputs

    from .serving.weights import PackedModel
    from .precision import dtype_from_args
    from .quiet import background_paused, pin
    from .serving.inputs import serving_model

    try:
        opts, cfg, raw, trace = parse(argv)
        placement = pin(opts.threads, [int(c) for c in opts.cpus.split(",") if c.strip()] if opts.cpus else None)
        import torch
        dtype = dtype_from_args(opts)
        model, tok = serving_model(cfg.model, opts.checkpoint, opts.source)
        packed = PackedModel(model, getattr(torch, dtype), opts.device)
        del model
        with background_paused(opts.pause) as paused:
            res = run_real(cfg, packed, tok, timer=opts.timer, trace=trace, free_running=opts.free_running)
    except UserError as exc:
        return fail(exc)
    res.metrics.update({**placement, "background_paused": paused is not None,
                        "command": " ".join(["python -m traces.execute"] + argv),
                        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    stamp = dt.datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    out = Path(opts.out or f"runs/execute/{stamp}_{cfg.scheduler.name}")
    write_outputs(out, raw, res.metrics, res.requests)
    write_atomic(out / "steps.parquet", lambda p: res.steps.to_parquet(p, index=False))
    if res.exits is not None:
        write_atomic(out / "exits.parquet", lambda p: res.exits.to_parquet(p, index=False))
    if res.generated is not None:
        write_atomic(out / "generated.parquet", lambda p: res.generated.to_parquet(p, index=False))
    # metrics.json again, last: it marks a finished run (steps.parquet written before it)
    write_atomic(out / "metrics.json",
                 lambda p: Path(p).write_text(json.dumps(res.metrics, indent=2, sort_keys=True, default=str) + "\n"))
    shown = dict(res.metrics, hardware=res.metrics["device"], cost=f"real, {res.metrics['dtype']}")
    print(format_summary(shown).replace(" cost)", ")"))
    print(f"  {'wall (incl. engine)':<20} {res.metrics['wall_s']:.2f} s")
    if res.exits is not None:
        m = res.metrics
        share = lambda xs: " / ".join(f"{x:.2f}" for x in xs)  # noqa: E731
        print(f"  {'live exits by loop':<20} {share(m['live_exit_share'])} (trace oracle "
              f"{share(m['trace_oracle_exit_share'])}); same exit as the oracle for {m['live_vs_oracle_same_exit']:.1%}"
              + (f", as the trace's confidence for {m['live_vs_trace_confidence_same_exit']:.1%}"
                 if "live_vs_trace_confidence_same_exit" in m else ""))
    print(f"  {'outputs':<20} {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
