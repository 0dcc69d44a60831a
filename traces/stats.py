"""Quality numbers of a recorded trace (used by the card and the tests)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from sim.exit.confidence import confidence_exits


def num_loops_of(df: pd.DataFrame) -> int:
    return max(int(c.split("_")[1]) for c in df.columns if c.startswith("pred_"))


def repeated_mask(df: pd.DataFrame, n: int = 4) -> np.ndarray:
    """True for tokens that complete an n-gram already seen earlier in the same
    request: a cheap detector of degenerate, looping text (on which the
    original model happily agrees with the student, inflating agreement)."""
    out = np.zeros(len(df), dtype=bool)
    toks, rids = df.token.to_numpy(), df.request_id.to_numpy()
    start = 0
    for i in range(1, len(df) + 1):
        if i == len(df) or rids[i] != rids[start]:
            seen = set()
            for j in range(start + n - 1, i):
                g = tuple(toks[j - n + 1:j + 1])
                out[j] = g in seen
                seen.add(g)
            start = i
    return out


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
    rep = repeated_mask(df)
    s["repeat_frac"] = float(rep.mean())
    fresh = df[~rep]
    nan = float("nan")
    s["agree_teacher_final_fresh"] = float((fresh[f"pred_{N}"] == fresh.teacher_token).mean()) if len(fresh) else nan
    s["agree_final_1_fresh"] = float(fresh["correct_1"].mean()) if len(fresh) else nan
    s["mean_exit_loop_fresh"] = float(fresh.exit_loop.mean()) if len(fresh) else nan
    return s


CARD_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def threshold_table(df: pd.DataFrame, thresholds=CARD_THRESHOLDS) -> pd.DataFrame:
    """The simulator's confidence exit (`sim.exit.confidence.confidence_exits`) against depth. Beside
    the simulator's accuracy (agreement with the final loop) it reports agreement with the
    original model, which only a recorded trace (teacher_token) can give."""
    N = num_loops_of(df)
    conf = df[[f"conf_{k}" for k in range(1, N + 1)]].to_numpy()
    pred = df[[f"pred_{k}" for k in range(1, N + 1)]].to_numpy()
    teacher = df.teacher_token.to_numpy()
    rows = []
    for t in thresholds:
        exits = confidence_exits(conf, t)
        chosen = pred[np.arange(len(df)), exits - 1]
        rows.append({"policy": f"confidence {t:g}", "mean_exit_loop": float(exits.mean()),
                     "agree_final": float((chosen == pred[:, -1]).mean()),
                     "agree_teacher": float((chosen == teacher).mean())})
    rows.append({"policy": "oracle", "mean_exit_loop": float(df.exit_loop.mean()), "agree_final": 1.0,
                 "agree_teacher": float((pred[:, -1] == teacher).mean())})
    return pd.DataFrame(rows)
