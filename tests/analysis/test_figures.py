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


def test_only_takes_the_file_names_the_readme_lists(tmp_path):
    """`--only exit_histograms` (a README name) runs its group; an unknown name lists them."""
    proc = subprocess.run([sys.executable, "-m", "analysis.figures", "--only", "timeline.png",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "timeline.png").exists()
    bad = subprocess.run([sys.executable, "-m", "analysis.figures", "--only", "nope"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "exit_histograms" in bad.stderr and "Traceback" not in bad.stderr


def test_every_committed_figure_belongs_to_one_group():
    from analysis.figures import FIGURES, GROUP_FILES, OTHER_FILES
    assert set(GROUP_FILES) == set(FIGURES)
    listed = [stem for stems in GROUP_FILES.values() for stem in stems] + list(OTHER_FILES)
    committed = {p.stem for p in (REPO / "figures").iterdir() if p.suffix in (".png", ".md") and p.stem != "README"}
    assert sorted(listed) == sorted(committed)
