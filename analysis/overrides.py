"""Hydra override strings as typed values, parsed by Hydra's own grammar.

A sweep point is named by its overrides (`scheduler.batch_size=16`); tables need
them as typed columns (16, not "16"), and the gathering step needs to know which
points a sweep command asked for, including those that never produced a file.
Parsing with Hydra's parser and expanding with its basic sweeper keeps that
identical to what `python -m sim.run -m ...` actually launched.
"""

from __future__ import annotations

from typing import Any, Iterable

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser


def _parser() -> OverridesParser:
    return OverridesParser.create()


def _scalar(value: Any) -> Any:
    """Lists and dicts (e.g. trace.synthetic.exit_probs=[0.5,0.5]) cannot be table cells
    that pandas groups by; keep them as their compact string form."""
    if isinstance(value, (list, tuple, dict)):
        return str(value).replace(" ", "")
    return value


def parse_point(overrides: Iterable[str]) -> dict[str, Any]:
    """`["scheduler=static", "scheduler.batch_size=16"]` -> {"scheduler": "static",
    "scheduler.batch_size": 16}; keys as written, without +/~ prefixes."""
    return {o.key_or_group: _scalar(o.value()) for o in _parser().parse_overrides(list(overrides))}


def expand(overrides: Iterable[str]) -> tuple[list[list[str]], list[str]]:
    """The job list a basic-sweeper multirun launches for these task overrides, in job
    number order, and the keys that vary across it (the swept keys)."""
    parsed = _parser().parse_overrides(list(overrides))
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    swept = [o.key_or_group for o in parsed if o.is_sweep_override()]
    return jobs, swept
