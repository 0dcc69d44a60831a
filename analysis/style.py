"""One visual vocabulary for every figure: a reader who learns that depth-wise is
green in one plot must find it green in the next, so colours, labels and the save
format are defined here once and nowhere else. Schedulers' and KV policies' colours,
labels and order are those they registered with (sim/registry.py); a variant that
registered none gets a colour of the fallback cycle, stable by its place in the registry."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window (CI, workers, notebooks alike)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from sim.registry import Registry, kv_registry, scheduler_registry  # noqa: E402

# Okabe-Ito (the registered colours are from it too): distinguishable with colour-blindness
# and in greyscale print; for variants that registered no colour.
FALLBACK_COLORS = ["#56B4E9", "#F0E442", "#D55E00", "#000000", "#999999", "#0072B2"]
LOOP_COLORS = ["#56B4E9", "#0072B2", "#003f63", "#001f33"]  # light = shallow exit, dark = deep
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


def _color(registry: Registry, name: str) -> str:
    if name not in registry:
        return "#444444"
    entry = registry.get(name)
    if entry.color:
        return entry.color
    unnamed = [e.name for e in registry.entries() if not e.color]
    return FALLBACK_COLORS[unnamed.index(name) % len(FALLBACK_COLORS)]


def scheduler_names() -> tuple[str, ...]:
    """Every registered scheduler, baselines first: the order of legends and grids."""
    return scheduler_registry.names()


def scheduler_color(name: str) -> str:
    return _color(scheduler_registry, name)


def scheduler_label(name: str) -> str:
    return scheduler_registry.get(name).label if name in scheduler_registry else name


def kv_names() -> tuple[str, ...]:
    return kv_registry.names()


def kv_color(name: str) -> str:
    return _color(kv_registry, name)


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
