"""What a figure group makes: its name, caption and files. Its own module because every
figure group returns it and `analysis.figures` imports every group, so no group can
import it from there without a cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Output:
    name: str
    caption: str
    files: list[Path] = field(default_factory=list)
