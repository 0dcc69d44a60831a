"""Trace loading: the round trip, and one test per way a file can be wrong."""

import numpy as np
import pandas as pd
import pytest

from sim.errors import TraceError
from sim.trace import DEFAULT_TRACE, load_trace, write_trace
from tests.sim.helpers import trace_frame


def good_frame() -> pd.DataFrame:
    frame = trace_frame([[1, 2, 3], [2, 1], [3]], prompt_lens=[5, 0, 9])
    for k in (1, 2, 3):
        frame[f"conf_{k}"] = np.linspace(0.1, 0.9, len(frame))
        frame[f"correct_{k}"] = frame.exit_loop <= k
    return frame


def save(frame: pd.DataFrame, tmp_path, name="t.parquet", num_loops=3, **meta):
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        write_trace(frame, path, num_loops, meta)
    return path


def test_round_trip_sorted_and_typed(tmp_path):
    frame = good_frame().sample(frac=1.0, random_state=0)  # rows in any order
    trace = load_trace(save(frame, tmp_path, model="m"))
    assert trace.num_loops == 3 and trace.num_tokens == 6
    assert trace.gen_len.tolist() == [3, 2, 1] and trace.prompt_len.tolist() == [5, 0, 9]
    assert trace.exit_loop.tolist() == [1, 2, 3, 2, 1, 3]
    assert trace.conf.shape == (6, 3) and trace.correct.dtype == bool
    assert trace.metadata["model"] == "m"


def test_csv_with_num_loops(tmp_path):
    trace = load_trace(save(good_frame(), tmp_path, "t.csv"), num_loops=3)
    assert trace.num_tokens == 6 and trace.correct[0].tolist() == [True, True, True]


def test_bundled_default_trace_loads():
    trace = load_trace()
    assert trace.path == str(DEFAULT_TRACE) and trace.num_tokens > 10_000 and "command" in trace.metadata


def expect_error(path, *fragments, num_loops=None):
    with pytest.raises(TraceError) as info:
        load_trace(path, num_loops)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_missing_column(tmp_path):
    expect_error(save(good_frame().drop(columns="prompt_len"), tmp_path), "missing", "prompt_len")


def test_misnamed_column(tmp_path):
    expect_error(save(good_frame().rename(columns={"exit_loop": "exitloop"}), tmp_path), "exit_loop", "exitloop")


def test_wrong_type(tmp_path):
    frame = good_frame()
    frame["exit_loop"] = frame.exit_loop.astype(str)
    frame.loc[3, "exit_loop"] = "two"
    expect_error(save(frame, tmp_path), "exit_loop", "integer", "row 3", "'two'")


def test_values_print_as_plain_numbers(tmp_path):
    frame = good_frame()
    frame.loc[1, "exit_loop"] = 7
    expect_error(save(frame, tmp_path), "row 1: 7 is outside 1..3")


def test_csv_with_another_suffix_is_read_as_csv(tmp_path):
    path = save(good_frame(), tmp_path, name="t.csv")
    txt = path.rename(tmp_path / "t.txt")
    assert load_trace(txt, num_loops=3).num_tokens == 6


def test_nan(tmp_path):
    frame = good_frame().astype({"position": float})
    frame.loc[4, "position"] = np.nan
    expect_error(save(frame, tmp_path), "position", "row 4", "finite")


def test_inf_in_conf(tmp_path):
    frame = good_frame()
    frame.loc[2, "conf_2"] = np.inf
    expect_error(save(frame, tmp_path), "conf_2", "row 2", "finite")


def test_non_integer_float(tmp_path):
    frame = good_frame().astype({"prompt_len": float})
    frame.loc[1, "prompt_len"] = 5.5
    expect_error(save(frame, tmp_path), "prompt_len", "row 1", "integer")


@pytest.mark.parametrize("value", [0, 4, -1])
def test_exit_loop_out_of_range(tmp_path, value):
    frame = good_frame()
    frame.loc[3, "exit_loop"] = value
    expect_error(save(frame, tmp_path), "exit_loop", "row 3", "1..3")


def test_num_loops_missing(tmp_path):
    path = tmp_path / "nometa.parquet"
    good_frame().to_parquet(path)
    expect_error(path, "num_loops")


def test_num_loops_disagrees_with_metadata(tmp_path):
    expect_error(save(good_frame(), tmp_path), "num_loops=4", "num_loops=3", num_loops=4)


def test_csv_needs_num_loops(tmp_path):
    expect_error(save(good_frame(), tmp_path, "t.csv"), "num_loops")


def test_duplicated_position(tmp_path):
    frame = good_frame()
    frame.loc[1, "position"] = 0
    expect_error(save(frame, tmp_path), "position", "duplicated", "request 0")


def test_position_gap(tmp_path):
    frame = good_frame()
    frame.loc[2, "position"] = 5
    expect_error(save(frame, tmp_path), "position", "row 2", "contiguous")


def test_negative_prompt_len(tmp_path):
    frame = good_frame()
    frame.loc[0, "prompt_len"] = -3
    expect_error(save(frame, tmp_path), "prompt_len", "row 0", "negative")


def test_prompt_len_varies_within_request(tmp_path):
    frame = good_frame()
    frame.loc[1, "prompt_len"] = 6
    expect_error(save(frame, tmp_path), "prompt_len", "row 1", "differs")


@pytest.mark.parametrize("value", [1.5, -0.1])
def test_conf_outside_unit_interval(tmp_path, value):
    frame = good_frame()
    frame.loc[5, "conf_3"] = value
    expect_error(save(frame, tmp_path), "conf_3", "row 5", "[0, 1]")


def test_correct_not_boolean(tmp_path):
    frame = good_frame()
    frame["correct_1"] = frame.correct_1.astype(int)
    frame.loc[0, "correct_1"] = 2
    expect_error(save(frame, tmp_path), "correct_1", "row 0", "boolean")


def test_incomplete_per_loop_columns(tmp_path):
    expect_error(save(good_frame().drop(columns="conf_2"), tmp_path), "conf_1, conf_2, conf_3")


def test_empty_file(tmp_path):
    for name in ("e.parquet", "e.csv"):
        path = tmp_path / name
        path.write_bytes(b"")
        expect_error(path, "empty" if name.endswith("csv") else "not a readable Parquet", num_loops=3)


def test_header_only(tmp_path):
    expect_error(save(good_frame().iloc[:0], tmp_path), "no rows")


def test_truncated_parquet(tmp_path):
    path = save(good_frame(), tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, "not a readable Parquet")


def test_missing_path(tmp_path):
    expect_error(tmp_path / "nope.parquet", "no such file")


def test_directory(tmp_path):
    expect_error(tmp_path, "directory")


def test_csv_of_garbage(tmp_path):
    path = tmp_path / "g.csv"
    path.write_bytes(b"\x00\xff garbage ,,, \n\x01\x02 more;;;\n")
    with pytest.raises(TraceError) as info:
        load_trace(path, 3)
    assert str(path) in str(info.value)
