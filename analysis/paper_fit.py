"""Calibrate the paper setting (conf/paper/gemma_a100.yaml) on three rows of the paper's table.

`python -m analysis.paper_fit --write` derives or fits, in this order, each from one
number of the paper and nothing else:
1. memory: usable share of the 40 GB and a per-request overhead, from Table K.1's
   maximum batches of the two models the fit uses (vanilla 111, recursive 123) with
   every request holding KV for its full 512 + 2048 tokens;
2. output lengths: uniform on [gen_len_min, 2048], gen_len_min fitted so that vanilla
   continuous batching gains over vanilla static what the paper's continuous row shows
   (a ratio: independent of the cost's scale);
3. `cost.layer_s` from the vanilla static row alone (throughput is exactly inversely
   proportional to it: every term of the paper's cost scales with it);
4. the exit distribution's one parameter, `mean_exit` (2 loops: a share 2 - mean_exit
   of tokens leaves after loop 1), from the recursive r=0 row alone.
The relaxed rows (r = 64..512) are then predicted (analysis.paper_table) with no
further fitting. Without `--write` it prints the values and leaves the file alone.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

from analysis.grid import compose_run, run_grid
from analysis.paper import ROWS
from sim.bundled import CONF_DIR
from sim.memory import KVMemory
from sim.model_size import weight_bytes

SETTING = "gemma_a100"
PAPER_CONF = CONF_DIR / "paper" / f"{SETTING}.yaml"
BASE = [f"+paper={SETTING}", "seed=0"]
STATIC, CONTINUOUS, RECURSIVE = ROWS[0], ROWS[1], ROWS[2]  # the three fitted rows
FITTED_ROWS = (0, 1, 2)
PROMPT, GEN_MAX = 512, 2048


def row_overrides(i: int) -> list[str]:
    """The overrides of the one `python -m sim.run` that gives row i's throughput."""
    row = ROWS[i]
    return [*BASE, *row.overrides, f"scheduler.batch_size={row.paper_batch}"]


@dataclass
class Calibration:
    utilization: float
    request_overhead_mb: float
    gen_len_min: int
    layer_s: float
    mean_exit: float
    notes: dict[str, float]

    def overrides(self) -> list[str]:
        return [f"memory.utilization={self.utilization:.6g}", f"memory.request_overhead_mb={self.request_overhead_mb:.6g}",
                f"trace.synthetic.gen_len_min={self.gen_len_min}", f"cost.layer_s={self.layer_s:.6g}",
                f"trace.synthetic.mean_exit={self.mean_exit:.6g}"]


def memory_budget(hardware_gb: float = 40.0) -> tuple[float, float, dict[str, float]]:
    """(utilization, overhead MB) that make the memory maximum at full length exactly
    Table K.1's batch for vanilla (111) and recursive r=0 (123): two equations, two
    unknowns. Capacity sits half a request above the K.1 batch so rounding cannot flip it."""
    models = [compose_run([*BASE, *row.overrides]) for row in (STATIC, RECURSIVE)]
    (w_v, w_r), (b_v, b_r) = [weight_bytes(c.model) for c in models], (STATIC.paper_batch, RECURSIVE.paper_batch)
    per_request = (w_v - w_r) / (b_r - b_v)  # bytes one request holds, KV included
    usable = w_v + (b_v + 0.5) * per_request
    kv = KVMemory(models[0].model, models[0].hardware, models[0].memory, "ignore").per_token * (PROMPT + GEN_MAX)
    overhead = per_request - kv
    notes = {"weights_vanilla_gb": w_v / 1e9, "weights_r0_gb": w_r / 1e9, "per_request_mb": per_request / 1e6,
             "kv_full_request_mb": kv / 1e6, "usable_gb": usable / 1e9}
    return usable / (hardware_gb * 1e9), overhead / 1e6, notes


def throughputs(points: list[list[str]]) -> list[float]:
    frame = run_grid(points, desc="paper fit")
    bad = frame[frame["status"] != "ok"]
    if len(bad):
        raise RuntimeError(f"paper fit: a point failed: {bad.iloc[0].get('error')}")
    return list(frame["throughput_tok_s"])


def solve(f: Callable[[float], float], lo: float, hi: float, target: float, tol: float,
          integer: bool = False, max_iter: int = 20) -> tuple[float, float]:
    """x in [lo, hi] with f(x) = target within relative tol (f monotone), by regula falsi
    with the Illinois step: a few simulations, not a bisection's dozen."""
    f_lo, f_hi = f(lo) - target, f(hi) - target
    if f_lo * f_hi > 0:
        raise RuntimeError(f"paper fit: target {target:g} outside [{f_lo + target:g}, {f_hi + target:g}]")
    side = 0
    x, fx = lo, f_lo
    for _ in range(max_iter):
        x = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        if integer:
            x = float(min(max(round(x), lo + 1), hi - 1)) if hi - lo > 1 else lo
        fx = f(x) - target
        if abs(fx) <= tol * abs(target) or (integer and hi - lo <= 1):
            break
        if fx * f_hi > 0:
            hi, f_hi = x, fx
            if side == 1:
                f_lo /= 2
            side = 1
        else:
            lo, f_lo = x, fx
            if side == -1:
                f_hi /= 2
            side = -1
    return x, fx + target


def calibrate(verbose: bool = True) -> Calibration:
    say = print if verbose else (lambda *_: None)
    util, overhead, notes = memory_budget()
    mem = [f"memory.utilization={util:.6g}", f"memory.request_overhead_mb={overhead:.6g}"]
    say(f"memory: utilization {util:.4f}, overhead {overhead:.1f} MB per request ({notes})")
    layer0 = 1e-3
    vanilla = [*BASE, *mem, f"cost.layer_s={layer0}", f"scheduler.batch_size={STATIC.paper_batch}"]

    def ratio(gmin: float) -> float:
        lens = f"trace.synthetic.gen_len_min={int(gmin)}"
        static, cont = throughputs([[*vanilla, *STATIC.overrides, lens], [*vanilla, *CONTINUOUS.overrides, lens]])
        say(f"  gen_len_min={int(gmin)}: continuous/static {cont / static:.4f}")
        return cont / static

    target = CONTINUOUS.paper_tok_s / STATIC.paper_tok_s
    gmin, got = solve(ratio, 1, GEN_MAX, target, tol=0.002, integer=True)
    gmin = int(gmin)
    say(f"lengths: gen_len_min={gmin} gives continuous/static {got:.4f} (paper {target:.4f})")
    static0 = throughputs([[*vanilla, *STATIC.overrides, f"trace.synthetic.gen_len_min={gmin}"]])[0]
    layer_s = layer0 * static0 / STATIC.paper_tok_s
    say(f"cost: layer_s={layer_s:.6g} s (static at {layer0} s/layer: {static0:.1f} tok/s)")
    recursive = [*BASE, *mem, f"trace.synthetic.gen_len_min={gmin}", f"cost.layer_s={layer_s:.6g}",
                 *RECURSIVE.overrides, f"scheduler.batch_size={RECURSIVE.paper_batch}"]

    def r0(mean: float) -> float:
        tok = throughputs([[*recursive, f"trace.synthetic.mean_exit={mean:.6g}"]])[0]
        say(f"  mean_exit={mean:.6g}: {tok:.1f} tok/s")
        return tok

    mean, got = solve(r0, 1.0, 2.0, RECURSIVE.paper_tok_s, tol=0.002)
    say(f"exits: mean_exit={mean:.6g} ({2 - mean:.1%} leave after loop 1) gives {got:.1f} tok/s "
        f"(paper {RECURSIVE.paper_tok_s})")
    return Calibration(util, overhead, gmin, layer_s, mean, notes)


TEMPLATE = """\
# @package _global_
# The paper's throughput setting (Bae et al. 2024: Gemma 2B family, A100 40 GB, prefix 512,
# up to 2048 generated tokens, Table 3 and Table K.1) under stated assumptions. Use:
#   python -m sim.run +paper={setting} model=gemma2b_r2 scheduler=depthwise scheduler.batch_size=123
# WRITTEN BY `python -m analysis.paper_fit --write`: every number is derived or fitted
# from one number of the paper (analysis/paper_fit.py says how); do not hand-edit.
defaults:
  - override /cost: layer_step
  - override /hardware: a100_40g
  - override /trace: paper_like
  - _self_

cost:
  # fitted on the vanilla static row alone ({static} tok/s at batch {b_static}): seconds per
  # decoder layer run in a step (sim/cost/layer_step.py): one 18-layer step takes {step_ms:.1f} ms
  layer_s: {layer_s:.6g}
trace:
  synthetic:
    num_requests: 2048
    prompt_len: 512
    length_dist: fixed  # prompts: all 512
    gen_len: 2048  # a cap, as max_new_tokens
    # generated lengths uniform on [gen_len_min, 2048] (mean {gen_mean:.0f}), fitted so vanilla
    # continuous / static = {cont} / {static} (the paper's continuous row)
    gen_len_min: {gen_len_min}
    # the one free exit parameter, fitted on the recursive r=0 row alone ({r0} tok/s at batch
    # {b_r0}): mean exit loop of 2; {share:.1%} of tokens leave after loop 1
    mean_exit: {mean_exit:.6g}
    correlation: 0.5  # assumption: a token repeats its predecessor's exit half the time
memory:
  # Table K.1: vanilla (weights {weights_vanilla_gb:.2f} GB) fits 111 requests, recursive r=0
  # ({weights_r0_gb:.2f} GB) 123: 12 more requests in {freed:.2f} GB freed, so one request holds
  # {per_request_mb:.1f} MB, of which its KV cache at full length (512 + 2048 tokens, 18 KB each)
  # is {kv_full_request_mb:.1f} MB: {overhead:.1f} MB more per request, {ratio_kv:.1f}x the KV alone.
  # Then 111 such requests plus vanilla's weights use {usable_gb:.2f} GB of the 40.
  utilization: {utilization:.6g}
  request_overhead_mb: {overhead:.6g}
"""


def write(cal: Calibration) -> None:
    n = cal.notes
    PAPER_CONF.write_text(TEMPLATE.format(
        setting=SETTING, static=STATIC.paper_tok_s, b_static=STATIC.paper_batch, step_ms=18 * cal.layer_s * 1e3,
        layer_s=cal.layer_s, gen_mean=(cal.gen_len_min + GEN_MAX) / 2, cont=CONTINUOUS.paper_tok_s,
        gen_len_min=cal.gen_len_min, r0=RECURSIVE.paper_tok_s, b_r0=RECURSIVE.paper_batch, share=2 - cal.mean_exit,
        mean_exit=cal.mean_exit, freed=n["weights_vanilla_gb"] - n["weights_r0_gb"],
        ratio_kv=n["per_request_mb"] / n["kv_full_request_mb"], overhead=cal.request_overhead_mb,
        utilization=cal.utilization, **n))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {PAPER_CONF.relative_to(CONF_DIR.parent)}")
    args = parser.parse_args(argv)
    cal = calibrate()
    print("overrides:", " ".join(cal.overrides()))
    if args.write:
        write(cal)
        print(f"wrote {PAPER_CONF}")


if __name__ == "__main__":
    main()
