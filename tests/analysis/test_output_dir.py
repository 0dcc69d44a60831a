"""analysis.figures writes under the working directory (or --out), never beside its own
code: with an installed package that would be site-packages (issue 30, item 3)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_the_default_output_folder_is_relative():
    from analysis.figures import OUT

    assert OUT == Path("figures") and not OUT.is_absolute()


@pytest.mark.slow
def test_a_figure_goes_to_the_working_directory(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    p = subprocess.run([sys.executable, "-m", "analysis.figures", "--only", "timeline"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert sorted(f.name for f in (tmp_path / "figures").iterdir()) == ["timeline.pdf", "timeline.png"]
