"""A synthetic trace file carries a bundled model's layout, so that `sim.run trace.path=FILE`
simulates the model with the trace's loops (issue 30, item 1)."""
import pytest

from sim.api import compose
from sim.layout import trace_model
from sim.synthetic import default_model, main
from sim.trace_io import read_trace_metadata


def test_default_file_names_the_three_loop_model_and_sim_follows_it(tmp_path):
    path = tmp_path / "big.parquet"
    main([str(path), "--num-requests", "20"])
    assert trace_model(str(path)) == "smollm2_135m_r3_mc"
    cfg = compose([f"trace.path={path}", "scheduler.batch_size=256"])
    assert (cfg.model.name, cfg.model.loops) == ("smollm2_135m_r3_mc", 3)


def test_the_model_can_be_chosen_or_left_out(tmp_path):
    two = tmp_path / "two.parquet"
    main([str(two), "--num-requests", "5", "--exit-probs", "0.5", "0.5", "--model", "gemma2b_r2"])
    assert trace_model(str(two)) == "gemma2b_r2"
    bare = tmp_path / "bare.parquet"
    main([str(bare), "--num-requests", "5", "--model", "none"])
    assert trace_model(str(bare)) is None and "layers_per_block" not in read_trace_metadata(bare)


@pytest.mark.parametrize("argv, says", [(["--model", "gemma2b_r2"], "has 2 loops but --exit-probs gives 3"),
                                        (["--model", "nope"], "is not known")])
def test_a_model_that_does_not_fit_is_one_line_and_writes_nothing(argv, says, tmp_path, capsys):
    out = tmp_path / "t.parquet"
    with pytest.raises(SystemExit) as done:
        main([str(out), "--num-requests", "5", *argv])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert says in err and err.strip().count("\n") == 0 and not out.exists()


def test_default_model_is_the_default_family_at_that_depth():
    assert default_model(2) == "smollm2_135m_r2_mc"
    assert default_model(3) == "smollm2_135m_r3_mc"
    assert default_model(5) is None
