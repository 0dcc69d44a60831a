"""Gathering step of a sweep: a Hydra callback that runs once every point has ended.

Registered in conf/config.yaml under `hydra.callbacks` (the simulator itself knows
nothing of it: sim/ imports nothing from analysis/), it turns the sweep directory
into `sweep.parquet` (one row per point the command asked for) and the throughput
plots, and ends the console output with the points that failed, so a failure is
seen where the sweep was started, not discovered later as a gap in a plot.
`python -m analysis.sweep DIR` does the same by hand, for a sweep that was interrupted
(Hydra skips end callbacks when a launcher raises) or is still running elsewhere.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def gather_and_plot(sweep_dir: Path) -> str:
    """Write sweep.parquet and the plots into the sweep dir; return the console report."""
    # Imported here, not at the top: Hydra instantiates callbacks for single runs too,
    # and those must not pay for importing matplotlib.
    from analysis.gather import failure_report, gather, write_sweep
    from analysis.sweep_plots import plot_sweep

    frame = gather(sweep_dir)
    table = write_sweep(frame, sweep_dir)
    plots = plot_sweep(frame, sweep_dir)
    lines = [f"sweep gathered: {table} ({len(frame)} points)"]
    lines += [f"  plot: {p}" for p in plots]
    lines.append(failure_report(frame))
    return "\n".join(lines)


class GatherSweep(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        print(gather_and_plot(Path(config.hydra.sweep.dir)), flush=True)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m analysis.sweep SWEEP_DIR")
    try:
        print(gather_and_plot(Path(args[0])))
    except FileNotFoundError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
