"""Slots over engine steps: the synchronization problem drawn as a picture.

Each cell is one slot in one loop step, coloured by the loop that slot ran, white
when it idled. Under synchronized exit a token that exited at loop 1 leaves its
slot white until the deepest token of the iteration is done; under depth-wise
batching the slot starts its request's next token at loop 1 in the next step.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from analysis.style import LOOP_COLORS, scheduler_label
from sim.engine import Timeline


def slot_matrix(timeline: Timeline) -> np.ndarray:
    """(slots, steps) loop each slot ran in each step, 0 where idle or empty."""
    return np.stack(timeline.loop, axis=1)


def draw(ax: plt.Axes, timeline: Timeline, num_loops: int, scheduler: str) -> float:
    """Draw one timeline; return the share of slot-steps that did loop work."""
    grid = slot_matrix(timeline)
    cmap = ListedColormap(["white", *LOOP_COLORS[:num_loops]])
    ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=num_loops + 0.5, aspect="auto", interpolation="nearest",
              extent=(0.5, grid.shape[1] + 0.5, grid.shape[0] - 0.5, -0.5))
    ax.set_xticks(np.arange(grid.shape[1] + 1, step=5)[1:])
    ax.set_yticks(np.arange(grid.shape[0], step=4))
    # cell borders make single idle cells visible
    ax.set_xticks(np.arange(grid.shape[1] + 1) + 0.5, minor=True)
    ax.set_yticks(np.arange(grid.shape[0] + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="#dddddd", linewidth=0.4)
    ax.grid(which="major", visible=False)
    ax.tick_params(which="minor", length=0)
    busy = float((grid > 0).mean())
    ax.set_title(f"{scheduler_label(scheduler)}: {busy:.0%} of slot-steps busy")
    ax.set_xlabel("engine loop step")
    ax.set_ylabel("batch slot")
    return busy


def legend_handles(num_loops: int) -> list[Patch]:
    return [Patch(facecolor="white", edgecolor="#999999", label="idle (waiting)")] + \
        [Patch(facecolor=LOOP_COLORS[k], label=f"loop {k + 1}") for k in range(num_loops)]
