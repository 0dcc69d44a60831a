"""The paper's throughput study (Bae et al. 2024, Table 3 and Table K.1), as data.

Numbers from /work/shared/reference.md (a secondary extraction of the paper: treat
them as approximate). Each row also says how rrtsim runs the same configuration,
so the table sets the paper's number and rrtsim's side by side from one list.
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER_SETTING = "Gemma 2B family, A100 40 GB, prefix 512 tokens, 2048 generated tokens, batch at each model's memory maximum"


@dataclass(frozen=True)
class PaperRow:
    label: str
    batching: str
    exit: str
    paper_tok_s: float
    paper_batch: int  # Table K.1: the paper's maximum batch for this model on A100 40 GB
    overrides: tuple[str, ...]  # how rrtsim runs it (on top of the paper-like trace)


ROWS = [
    PaperRow("vanilla Gemma 2B", "static", "no", 1080, 111, ("model=gemma2b_vanilla", "scheduler=static")),
    PaperRow("vanilla Gemma 2B", "continuous sequence-wise", "no", 1528, 111,
             ("model=gemma2b_vanilla", "scheduler=continuous")),
    PaperRow("recursive, 2 loops", "continuous depth-wise", "oracle", 2877, 123,
             ("model=gemma2b_r2", "scheduler=depthwise")),
    *[PaperRow(f"relaxed r={r}", "continuous depth-wise", "oracle", tok, batch,
               ("model=gemma2b_r2", "scheduler=depthwise", f"model.lora_rank={r}"))
      for r, tok, batch in ((64, 2157, 117), (128, 2149, 115), (256, 1921, 111), (512, 1719, 103))],
]
