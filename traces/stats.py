"""Quality numbers of a recorded trace (used by the card and the tests)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def num_loops_of(df: pd.DataFrame) -> int:
    return max(int(c.split("_")[1]) for c in df.columns if c.startswith("pred_"))


def trace_stats(df: pd.DataFrame) -> dict:
    N = num_loops_of(df)
    s = {"tokens": len(df), "requests": int(df.request_id.nunique()), "num_loops": N,
         "mean_gen_len": float(df.groupby("request_id").size().mean())}
    s["agree_teacher_final"] = float((df[f"pred_{N}"] == df.teacher_token).mean())
    for k in range(1, N + 1):
        s[f"agree_teacher_{k}"] = float((df[f"pred_{k}"] == df.teacher_token).mean())
        s[f"agree_final_{k}"] = float(df[f"correct_{k}"].mean())
        s[f"mean_conf_{k}"] = float(df[f"conf_{k}"].mean())
    hist = np.bincount(df.exit_loop.to_numpy(), minlength=N + 1)[1:]
    s["exit_hist"] = {k + 1: int(h) for k, h in enumerate(hist)}
    s["exit_frac"] = {k + 1: float(h / len(df)) for k, h in enumerate(hist)}
    s["mean_exit_loop"] = float(df.exit_loop.mean())
    return s
