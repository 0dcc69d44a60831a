"""The rrtsim prompt set (written for rrtsim; see build.py and README.md).

``load_prompts(split)`` returns the prompts of one fixed split: "train" (the
only prompts uptraining ever sees) or "heldout" (recording / evaluation).
"""
from __future__ import annotations

import json
from pathlib import Path

PROMPTS_FILE = Path(__file__).with_name("prompts.jsonl")


def load_prompts(split: str | None = None) -> list[dict]:
    items = [json.loads(l) for l in PROMPTS_FILE.read_text().splitlines() if l.strip()]
    if split in (None, "all"):
        return items
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be train, heldout or all, not {split!r}")
    return [it for it in items if it["split"] == split]
