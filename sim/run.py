"""`python -m sim.run [overrides]`: one simulation (or a sweep with -m), Hydra CLI.

Writes to the Hydra run directory: metrics.json, requests.parquet and the resolved
config.yaml, each atomically and only once the run has succeeded, so a failed or
killed run leaves no file that looks like a result. Bad input (trace, config)
ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sim.api import GROUPS, check_choices, follow_trace_model, group_options, hydra_error
from sim.config import CONF_DIR, load_config
from sim.errors import UserError
from sim.registry import discover_all, kv_registry
from sim.simulation import simulate
from sim.trace_io import write_atomic

SUMMARY_ROWS = [
    ("throughput", "throughput_tok_s", "{:,.0f} tok/s"),
    ("makespan", "makespan_s", "{:.3f} s"),
    ("requests / tokens", None, None),
    ("effective batch", "effective_batch", "{}"),
    ("mean exit loop", "mean_exit_loop", "{:.3f}"),
    ("loop steps / token", "loop_steps_per_token", "{:.4f}"),
    ("slot utilization", "slot_utilization", "{:.1%}"),
    ("accuracy cost", "accuracy_cost", "{:.2%}"),
    ("peak KV", "peak_kv_bytes", None),
    ("TTFT p50 / p99", ("ttft_p50_s", "ttft_p99_s"), "{:.4f} / {:.4f} s"),
    ("TPOT p50 / p99", ("tpot_p50_s", "tpot_p99_s"), "{:.5f} / {:.5f} s"),
    ("e2e p50 / p99", ("e2e_p50_s", "e2e_p99_s"), "{:.3f} / {:.3f} s"),
]


def format_summary(m: dict[str, Any], model_from_trace: bool = False, profile: dict[str, Any] | None = None) -> str:
    """The run's summary table; `profile` (cost=profiled: its file's path and metadata)
    names the device the step times were measured on, instead of the unused hardware."""
    device = profile["metadata"].get("device", "an unnamed device") if profile else m["hardware"]
    head = (f"{m['scheduler']} | exit={m['exit_policy']} kv={m['kv_policy']} | batch {m['batch_size']} | "
            f"{m['model']} on {device} ({m['cost']} cost)")
    lines = [head, "-" * len(head)]
    if profile:
        meta = profile["metadata"]
        lines.append(f"  {'profile':<20} {profile['path']}: measured on {device}, {meta.get('dtype', '?')}, "
                     f"{meta.get('threads', '?')} thread(s), {meta.get('date', 'undated')[:10]} "
                     "(a profile belongs to its CPU)")
    if model_from_trace:
        lines.append(f"  {'model':<20} {m['model']}, {m['loops']} loops: the model the trace's metadata names "
                     "(model=NAME to choose another)")
    for label, key, fmt in SUMMARY_ROWS:
        if label == "requests / tokens":
            value = f"{m['num_requests']:,} / {m['num_tokens']:,}"
        elif label == "peak KV":
            value = f"{m['peak_kv_bytes'] / 1e9:.3f} GB"
        elif isinstance(key, tuple):
            vals = [m[k] for k in key]
            value = fmt.format(*vals) if None not in vals else "n/a"
        else:
            value = fmt.format(m[key]) if m[key] is not None else "n/a"
        lines.append(f"  {label:<20} {value}")
    if m.get("rounds") is not None:  # scheduler=speculative
        rate = "n/a" if m["acceptance_rate"] is None else f"{m['acceptance_rate']:.1%}"
        lines.append(f"  {'acceptance rate':<20} {rate} of {m['drafted_tokens']:,} drafts "
                     f"(K={m['draft_len']}, d={m['draft_loops']})")
        lines.append(f"  {'tokens / round':<20} {m['mean_tokens_per_round']:.3f} over {m['rounds']:,} rounds")
    if m.get("rows_run") is not None:  # scheduler=depthwise_spec
        rate = "n/a" if m["acceptance_rate"] is None else f"{m['acceptance_rate']:.1%}"
        lines.append(f"  {'acceptance rate':<20} {rate} of {m['verified_drafts']:,} drafts "
                     f"(d={m['draft_loops']}, accept={m['accept']})")
        lines.append(f"  {'rows run':<20} {m['rows_run']:,} ({m['row_loops']:,} row-loops)")
        lines.append(f"  {'rows discarded':<20} {m['rows_discarded']:,} ({m['discarded_row_loops']:,} row-loops)")
        lines.append(f"  {'rows / step':<20} {m['mean_rows_per_step']:.3f}")
    return "\n".join(lines)


def profile_of(cfg) -> dict[str, Any] | None:
    """cost=profiled: the profile's path (as stored in tables) and metadata; else None."""
    if cfg.cost.kind != "profiled":
        return None
    from sim.cost_profiled import BUNDLED, read_profile
    from sim.trace_io import repo_relative

    path = cfg.cost.profile or BUNDLED
    return {"path": repo_relative(path), "metadata": read_profile(path)["metadata"]}


def write_outputs(out: Path, cfg: DictConfig, metrics: dict[str, Any], requests) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "requests.parquet", lambda p: requests.to_parquet(p, index=False))
    write_atomic(out / "config.yaml", lambda p: Path(p).write_text(OmegaConf.to_yaml(cfg)))
    # metrics.json last: its presence marks a finished run.
    write_atomic(out / "metrics.json",
                 lambda p: Path(p).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n"))


def sweep_id() -> str:
    """A stable name for a sweep: the same command line gives the same directory, so a
    killed sweep rerun with the same command finds its finished points and skips them.
    Cached like Hydra's `now`: the launcher resolves it once from its command line and
    every job's config inherits the value, also in joblib worker processes."""
    args = sorted(a for a in sys.argv[1:] if a not in ("-m", "--multirun"))
    return hashlib.sha1("\n".join(args).encode()).hexdigest()[:10]


OmegaConf.register_new_resolver("sweep_id", sweep_id, replace=True, use_cache=True)


def options_help() -> str:
    """The config groups and their options for `--help`, from the registries and conf/
    (never the internal `base_*` schemas)."""
    discover_all()
    lines = [f"  {g}: {', '.join(group_options(g))}" for g in GROUPS]
    lines.append(f"  (key) exit.kv_policy: {', '.join(kv_registry.names())}")
    return "\n".join(lines)


OmegaConf.register_new_resolver("rrtsim_options", options_help, replace=True)
discover_all()  # every variant's typed schema in Hydra's ConfigStore before Hydra composes


def _discard_empty(out: Path) -> None:
    try:
        out.rmdir()  # Hydra created it before the run; leave nothing behind on failure
    except OSError:
        pass


def _fail(out: Path, sweeping: bool, message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    if not sweeping:
        _discard_empty(out)
        sys.exit(2)
    # In a sweep one bad point must not kill the others: record it for the gathering step.
    write_atomic(out / "error.txt", lambda p: Path(p).write_text(f"{message}\n"))
    return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    out = Path(HydraConfig.get().runtime.output_dir)
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    try:
        from_trace = follow_trace_model(task, list(HydraConfig.get().overrides.task)) is not None
    except UserError as exc:
        return _fail(out, sweeping, str(exc))
    done = out / "metrics.json"
    if sweeping and done.exists() and (out / "config.yaml").read_text() == OmegaConf.to_yaml(task):
        print(f"{out.name}: already finished, skipped")
        return json.loads(done.read_text())["throughput_tok_s"]
    try:
        typed = load_config(task)
        result = simulate(typed)
    except UserError as exc:
        return _fail(out, sweeping, str(exc))
    (out / "error.txt").unlink(missing_ok=True)
    write_outputs(out, task, result.metrics, result.requests)
    print(format_summary(result.metrics, from_trace, profile_of(typed)))
    print(f"  {'outputs':<20} {out}")
    return result.metrics["throughput_tok_s"]


def check_composes(overrides: list[str]) -> None:
    """Compose once with Hydra's compose API: a key the option does not have or a value of
    the wrong type becomes one ConfigError line instead of Hydra's multi-line report."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            compose("config", overrides=overrides)
    except HydraException as exc:
        raise hydra_error(exc) from None


def cli(argv: list[str] | None = None) -> None:
    """Check the config group options of the command line (one line and exit code 2 for
    an unknown or internal one, with the valid ones), then run Hydra's main."""
    args = sys.argv[1:] if argv is None else argv
    overrides, skip = [], False
    for a in args:  # Hydra's flags, and the values of those that take one, are not overrides
        if not skip and not a.startswith("-"):
            overrides.append(a)
        skip = a in ("-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir", "-c", "--cfg",
                     "-p", "--package", "--info", "--experimental-rerun")
    try:
        check_choices(overrides)
        if not any(a.startswith("-") for a in args):  # a single run: refuse a bad key or type in one line
            check_composes(overrides)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
