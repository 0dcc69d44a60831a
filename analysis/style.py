"""One visual vocabulary for every figure: a reader who learns that depth-wise is
green in one plot must find it green in the next, so colours, labels and the save
format are defined here once and nowhere else."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window (CI, workers, notebooks alike)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

SCHEDULERS = ("static", "continuous", "sync_exit", "depthwise")
SCHEDULER_COLORS = {  # Okabe-Ito: distinguishable with colour-blindness and in greyscale print
    "static": "#E69F00",
    "continuous": "#0072B2",
    "sync_exit": "#CC79A7",
    "depthwise": "#009E73",
    "speculative": "#D55E00",
}
SCHEDULER_LABELS = {
    "static": "static",
    "continuous": "continuous (sequence-wise)",
    "sync_exit": "synchronized exit",
    "depthwise": "continuous depth-wise",
    "speculative": "self-speculative",
}
LOOP_COLORS = ["#56B4E9", "#0072B2", "#003f63", "#001f33"]  # light = shallow exit, dark = deep
KV_POLICIES = ("ignore", "propagate", "recompute", "share")
KV_COLORS = dict(zip(KV_POLICIES, ("#999999", "#D55E00", "#CC79A7", "#009E73")))
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P"]

plt.rcParams.update({
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
})


THOUSANDS = FuncFormatter(lambda v, _: f"{v:,.0f}")  # 120,000 rather than 1.2e5 or 120000
PLAIN = FuncFormatter(lambda v, _: f"{v:g}")  # log axes: 0.05, not 5 x 10^-2
# minor ticks of a log axis: label only 2x and 5x, so neighbours never collide
LOG_MINOR = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")


def scheduler_color(name: str) -> str:
    return SCHEDULER_COLORS.get(name, "#444444")


def scheduler_label(name: str) -> str:
    return SCHEDULER_LABELS.get(name, name)


def save(fig: plt.Figure, stem: Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Write the figure in every format next to each other and close it (figures built
    in a loop would otherwise pile up in memory). Metadata dates are dropped so that
    regenerating an unchanged figure gives identical bytes."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        meta = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
        fig.savefig(path, bbox_inches="tight", metadata=meta)
        paths.append(path)
    plt.close(fig)
    return paths
