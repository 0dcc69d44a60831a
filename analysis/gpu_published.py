"""`python -m analysis.gpu_published`: rrtsim's GPU cost models against published serving numbers.

Each published point (gpt-fast, NeMo, TensorRT-LLM, Vidur; numbers as reference.md and the
sources give them) is simulated in its own setting: the vanilla model (one loop, so the
trace's exit pattern is irrelevant), the published batch, fixed prompt and output lengths,
the published GPU, all requests at t=0 and memory not bounding (each setting ran on its
device). Each point runs twice, `cost=gpu_profile` (measured operators) and `cost=roofline`
(assumed efficiencies), and each error is a speed ratio minus one: rrtsim's throughput over
the published one, or the published time over rrtsim's; above 0 the model is too fast.

Writes figures/data/gpu_published.csv and the table between the markers in docs/gpu_costs.md.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.grid import run_grid

# Outputs under the working directory (the repository root when regenerating the committed
# ones), never beside the installed code.
CSV = Path("figures") / "data" / "gpu_published.csv"
DOC = Path("docs") / "gpu_costs.md"
COSTS = {"gpu_profile": ["cost=gpu_profile"], "roofline": ["cost=roofline"]}  # the two compared
# A diagnostic, not a third model: the measured GPU time alone, without the vLLM host's CPU work
# per step, to show how much of a miss that CPU work is on stacks without it (gpt-fast, TensorRT-LLM).
RUNS = {**COSTS, "gpu_only": ["cost=gpu_profile", "cost.cpu_overhead=false"]}
WITHIN = 0.15  # the target: within 15% of a published point
# metric -> (rrtsim's metrics key, published unit -> seconds or tok/s, a rate or a time)
METRICS = {
    "output tok/s": ("throughput_tok_s", 1.0, "rate"),
    "ms per request": ("e2e_p50_s", 1e-3, "time"),
    "ms to first token": ("ttft_p50_s", 1e-3, "time"),
    "ms between tokens (p50)": ("tpot_p50_s", 1e-3, "time"),
}
GPT_FAST = "https://github.com/pytorch-labs/gpt-fast (README)"
NEMO = "https://docs.nvidia.com/nemo-framework/user-guide/latest/performance/llama.html"
TRT = "https://github.com/NVIDIA/TensorRT-LLM/blob/v0.6.1/docs/source/performance.md"
VIDUR = "Vidur (Agrawal et al., MLSys 2024), via reference.md"


@dataclass(frozen=True)
class Published:
    point: str
    source: str
    stack: str  # the software that produced the number
    hardware: str  # conf/hardware/ option of the GPU it ran on
    batch: int
    prompt: int
    output: int
    requests: int
    scheduler: str
    metric: str
    value: float

    def overrides(self) -> list[str]:
        """The `python -m sim.run` overrides of this setting (the cost model added per run)."""
        return ["trace=paper_like", "model=llama2_7b_vanilla", f"hardware={self.hardware}",
                "trace.synthetic.length_dist=fixed", f"trace.synthetic.prompt_len={self.prompt}",
                f"trace.synthetic.gen_len={self.output}", f"trace.synthetic.num_requests={self.requests}",
                f"scheduler={self.scheduler}", f"scheduler.batch_size={self.batch}", "memory.limit=false", "seed=0"]


def _nemo(hw: str, batch: int, ms: float) -> Published:
    gpu = "A100 80 GB SXM4" if hw == "a100_80g" else "H100 80 GB HBM3"
    return Published(f"NeMo {gpu.split()[0]} batch {batch}, 128 in / 20 out", NEMO,
                     "NeMo inference (TensorRT-LLM engine), TP 1", hw, batch, 128, 20, batch, "static",
                     "ms per request", ms)


POINTS = [
    # gpt-fast's benchmark prompt ("Hello, my name is", 6 tokens with BOS), 200 new tokens; its
    # tok/s divides the generated tokens by the whole generate() time (prefill included)
    Published("gpt-fast batch 1, bf16, A100 at 330 W", GPT_FAST, "gpt-fast (torch.compile, CUDA graphs), TP 1",
              "a100_80g", 1, 6, 200, 1, "static", "output tok/s", 104.9),
    *[_nemo("a100_80g", b, ms) for b, ms in ((1, 234.0), (2, 249.6), (4, 272.6), (8, 329.5))],
    *[_nemo("h100", b, ms) for b, ms in ((1, 153.8), (2, 160.8), (4, 174.8), (8, 199.2))],
    Published("TensorRT-LLM static batch 384, 128 / 128", TRT, "TensorRT-LLM v0.6.1, fp16, TP 1", "a100_80g",
              384, 128, 128, 384, "static", "output tok/s", 5586.0),
    Published("TensorRT-LLM static batch 60, 128 / 2048", TRT, "TensorRT-LLM v0.6.1, fp16, TP 1", "a100_80g",
              60, 128, 2048, 60, "static", "output tok/s", 1928.0),
    Published("TensorRT-LLM static batch 52, 2048 / 128", TRT, "TensorRT-LLM v0.6.1, fp16, TP 1", "a100_80g",
              52, 2048, 128, 52, "static", "output tok/s", 591.0),
    Published("TensorRT-LLM first token, batch 1, 2048-token prompt", TRT, "TensorRT-LLM v0.6.1, fp16, TP 1",
              "a100_80g", 1, 2048, 1, 1, "static", "ms to first token", 133.0),
    Published("Vidur's vLLM workload: 1000 x (512 + 256), batch cap 128", VIDUR,
              "Vidur's prediction of vLLM (its own profiles), TP 1", "a100_80g", 128, 512, 256, 1000,
              "continuous", "output tok/s", 2261.0),
    Published("Vidur's vLLM workload: time between tokens p50", VIDUR,
              "Vidur's prediction of vLLM (its own profiles), TP 1", "a100_80g", 128, 512, 256, 1000,
              "continuous", "ms between tokens (p50)", 46.8),
]


def speed_error(predicted: float, published: float, kind: str) -> float:
    """rrtsim's speed over the published speed, minus one (above 0: rrtsim too fast)."""
    return predicted / published - 1.0 if kind == "rate" else published / predicted - 1.0


def table() -> pd.DataFrame:
    """One row per published point: both cost models' predictions and errors."""
    runs = [[*p.overrides(), *extra] for p in POINTS for extra in RUNS.values()]
    frame = run_grid(runs, desc="published GPU points")
    bad = frame[frame["status"] != "ok"]
    if len(bad):
        raise RuntimeError(f"gpu_published: a point failed: {bad.iloc[0].get('error')}")
    rows = []
    for i, p in enumerate(POINTS):
        key, scale, kind = METRICS[p.metric]
        row = {"point": p.point, "stack": p.stack, "hardware": p.hardware, "batch": p.batch, "prompt": p.prompt,
               "output": p.output, "requests": p.requests, "metric": p.metric, "published": p.value}
        for j, cost in enumerate(RUNS):
            got = float(frame.loc[i * len(RUNS) + j, key]) / scale
            row[cost] = got
            row[f"{cost}_err"] = speed_error(got, p.value, kind)
        row["overrides"] = " ".join(p.overrides())
        row["source"] = p.source
        rows.append(row)
    return pd.DataFrame(rows)


def summary(t: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {"points": len(t)}
    for cost in COSTS:
        err = t[f"{cost}_err"].abs()
        out[f"{cost}_within"] = int((err <= WITHIN).sum())
        out[f"{cost}_median_abs_err"] = float(err.median())
    out["target_met"] = bool(out["gpu_profile_within"] >= out["roofline_within"]
                             and out["gpu_profile_median_abs_err"] <= out["roofline_median_abs_err"] / 2)
    return out


def markdown(t: pd.DataFrame) -> str:
    def num(v: float) -> str:
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}"

    shown = pd.DataFrame({
        "published point": t["point"], "stack": t["stack"], "GPU": t["hardware"], "metric": t["metric"],
        "published": t["published"].map(num), "gpu_profile": t["gpu_profile"].map(num),
        "error": t["gpu_profile_err"].map("{:+.1%}".format), "roofline": t["roofline"].map(num),
        "error ": t["roofline_err"].map("{:+.1%}".format),
        "gpu_profile without CPU overheads: error": t["gpu_only_err"].map("{:+.1%}".format)})
    s = summary(t)
    lines = [shown.to_markdown(index=False), "",
             f"Within {WITHIN:.0%}: gpu_profile {s['gpu_profile_within']} of {s['points']}, roofline "
             f"{s['roofline_within']} of {s['points']}. Median |error|: gpu_profile "
             f"{s['gpu_profile_median_abs_err']:.1%}, roofline {s['roofline_median_abs_err']:.1%}. "
             f"Target (within 15% at least as often as the roofline, median |error| at most half the "
             f"roofline's): {'met' if s['target_met'] else 'not met'}."]
    return "\n".join(lines)


def derived() -> pd.DataFrame:
    """What cost=gpu_profile derives from each measured profile (its docstring says how)."""
    from analysis.grid import compose_run
    from sim.cost import make_cost_model

    rows = []
    for model in ("llama2_7b_vanilla", "phi2_vanilla"):
        for hw in ("a100_80g", "h100"):
            cfg = compose_run([f"model={model}", "cost=gpu_profile", f"hardware={hw}"])
            c = make_cost_model(cfg.cost, cfg.hardware, cfg.model)
            rows.append({
                "model": model, "GPU": hw, "measured as": c.measured.key,
                "B (TB/s, of peak)": f"{c.bandwidth / 1e12:.2f} ({c.bandwidth / 1e9 / cfg.hardware.bandwidth_gb_s:.2f})",
                "F (TFLOP/s, of peak)": f"{c.flops / 1e12:.0f} ({c.flops / 1e12 / cfg.hardware.peak_tflops:.2f})",
                "shortest kernel (us)": f"{c.kernel_s * 1e6:.1f}",
                "layer at 1 / 128 / 4096 tokens (ms)": " / ".join(f"{c.layer(n) * 1e3:.3f}" for n in (1, 128, 4096)),
                "CPU per step at batch 8 / 128 (ms)": " / ".join(f"{sum(part(n) for part in c.cpu) * 1e3:.2f}"
                                                                 for n in (8, 128)),
            })
    return pd.DataFrame(rows)


START, END = "<!-- gpu_published:start -->", "<!-- gpu_published:end -->"
DERIVED_START, DERIVED_END = "<!-- gpu_derived:start -->", "<!-- gpu_derived:end -->"
REGIME_START, REGIME_END = "<!-- gpu_regime:start -->", "<!-- gpu_regime:end -->"  # analysis.regime_map writes it


def _replace_block(text: str, start: str, end: str, body: str, doc: Path) -> str:
    if start not in text or end not in text:
        raise RuntimeError(f"{doc} has no {start} ... {end} block to write into")
    return re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{body}\n{end}", text, flags=re.S)


def write_doc_block(doc: Path, start: str, end: str, body: str) -> None:
    doc.write_text(_replace_block(doc.read_text(), start, end, body, doc))


def write(t: pd.DataFrame, csv: Path = CSV, doc: Path = DOC) -> None:
    csv.parent.mkdir(parents=True, exist_ok=True)
    t.to_csv(csv, index=False, float_format="%.6g")
    if not doc.exists():  # not run from a checkout: only the table
        print(f"no {doc} here: the table goes to {csv} only")
        return
    text = _replace_block(doc.read_text(), START, END, markdown(t), doc)
    text = _replace_block(text, DERIVED_START, DERIVED_END, derived().to_markdown(index=False), doc)
    doc.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print the table, write nothing")
    args = parser.parse_args(argv)
    t = table()
    print(markdown(t))
    if not args.no_write:
        write(t)
        print(f"wrote {CSV} and the table in {DOC}")


if __name__ == "__main__":
    main()
