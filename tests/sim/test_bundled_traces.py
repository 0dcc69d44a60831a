"""Every bundled trace in traces/data/ honours the contract, names its layout and has a
card; the simulator runs it on the model that recorded it. Needs no torch."""
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sim.api import compose
from sim.config import ModelConfig
from sim.layout import Layout
from sim.trace import DEFAULT_TRACE, load_trace
from sim.trace_model import trace_model

DATA = Path(__file__).resolve().parents[2] / "traces" / "data"
BUNDLED = sorted(DATA.glob("*.parquet"))
MODELS = {"smollm2_r2_mc_r64_coda": "smollm2_135m_r2_mc", "smollm2_r2_mc_r64": "smollm2_135m_r2_mc", "smollm2_r3_mc_r64": "smollm2_135m_r3_mc"}


def test_the_bundled_traces_are_there():
    assert [p.stem for p in BUNDLED] == sorted(MODELS) and DEFAULT_TRACE in BUNDLED


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_bundled_trace(path):
    assert path.stat().st_size < 10 * 2 ** 20
    assert path.with_suffix(".md").exists(), "every bundled trace needs a card"
    t = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in t.schema.metadata.items()}
    n = int(meta["num_loops"])
    for k in ["model", "loops", "layout", "init", "lora_rank", "uptrain_steps", "uptrain_tokens",
              "prompts", "commit", "command", "date", "prelude_layers", "layers_per_block", "coda_layers"]:
        assert meta.get(k), k
    df = t.to_pandas()
    preds = df[[f"pred_{k}" for k in range(1, n + 1)]].to_numpy()
    first = (preds == preds[:, -1:]).argmax(1) + 1
    assert (first == df.exit_loop.to_numpy()).all()
    assert (df.token == df[f"pred_{n}"]).all()
    tr = load_trace(path)
    assert tr.num_loops == n and tr.num_tokens == len(df)
    layout = Layout.from_metadata(meta)
    assert tr.layout == layout
    assert layout.describe() in meta["model"]  # the keys agree with the recorded description
    name = trace_model(str(path))
    assert name == MODELS[path.stem]
    assert ModelConfig.bundled(name).layout == layout


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_the_model_follows_the_trace_unless_chosen(path):
    cfg = compose([f"trace.path={path}", "model.lora_rank=32"])
    assert cfg.model.name == MODELS[path.stem] and cfg.model.lora_rank == 32  # model.* applies on top
    assert cfg.model.loops == load_trace(path).num_loops
    assert compose([f"trace.path={path}", "model=gemma2b_r2"]).model.name == "gemma2b_r2"
