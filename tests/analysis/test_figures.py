"""`python -m analysis.figures` end to end on its fast figures (the full run takes minutes)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end: subprocesses, a kernel or a sweep

REPO = Path(__file__).resolve().parents[2]


def test_fast_figures_are_written_as_png_and_pdf(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "analysis.figures", "--only", "traces", "timeline", "uptraining",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("exit_histograms", "threshold_tradeoff", "timeline", "uptraining_curves"):
        png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
        assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
        assert 10_000 < png.stat().st_size < 1_000_000
    assert not (tmp_path / "README.md").exists()  # --only leaves the provenance of a full run alone
