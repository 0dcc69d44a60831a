"""Every bundled trace in traces/data/ honours the contract and has a card."""
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "traces" / "data"
BUNDLED = sorted(DATA.glob("*.parquet"))


def test_bundled_traces_present():
    if not BUNDLED:
        pytest.skip("no bundled traces yet (traces/data/*.parquet)")


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_bundled_trace(path):
    assert path.stat().st_size < 10 * 2 ** 20
    assert path.with_suffix(".md").exists(), "every bundled trace needs a card"
    t = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in t.schema.metadata.items()}
    n = int(meta["num_loops"])
    for k in ["model", "loops", "layout", "init", "lora_rank", "uptrain_steps", "uptrain_tokens",
              "prompts", "commit", "command", "date"]:
        assert meta.get(k), k
    df = t.to_pandas()
    preds = df[[f"pred_{k}" for k in range(1, n + 1)]].to_numpy()
    first = (preds == preds[:, -1:]).argmax(1) + 1
    assert (first == df.exit_loop.to_numpy()).all()
    assert (df.token == df[f"pred_{n}"]).all()
    try:
        from sim.trace import load_trace
    except ImportError as e:
        pytest.skip(f"sim.trace not available yet: {e}")
    tr = load_trace(path)
    assert tr.num_loops == n and tr.num_tokens == len(df)
