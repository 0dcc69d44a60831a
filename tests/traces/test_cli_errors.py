"""The traces commands' command lines (traces/cli.py): one style per command, and every
config mistake a one-line error found before any model loads (issue 30, item 2)."""
import subprocess
import sys
from pathlib import Path

import pytest

from sim.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv, says", [
    (["schedular=depthwise"], "schedular"),
    (["scheduler=depthwse"], "valid: static"),
    (["foo.bar=1"], "foo"),
    (["scheduler.batch_size=-1"], "batch_size"),
    (["--device", "cpu"], "write device=VALUE"),
    (["--devise", "cpu"], "did you mean device"),
    (["threads=x"], "threads"),
    (["dtype=fp8"], "valid: auto, bfloat16, float32"),
    (["checkpoint=/no/such.pt"], "no such file"),
    (["trace.path=/no/such.parquet"], "no such file"),
    (["exit=live"], "exit=live needs checkpoint=PATH"),
    (["free_running=true"], "no trace exits to replay"),  # depthwise honours the default exit=oracle
    (["free_running=true", "exit=confidence", "scheduler=sync_exit"], "no trace exits to replay"),
    (["free_running=true", "scheduler=speculative"], "not served free-running"),
])
def test_execute_refuses_mistakes_without_loading_a_model(argv, says):
    from traces.execute import parse

    with pytest.raises(UserError, match=says) as err:
        parse(argv)
    assert "\n" not in str(err.value) and "+" not in str(err.value)


def test_execute_splits_its_own_keys_from_sim_overrides():
    from traces.execute import parse

    opts, cfg, raw, trace = parse(["scheduler=static", "threads=2", "pause=false", "scheduler.batch_size=4"])
    assert (opts.threads, opts.pause, opts.device) == (2, False, "cpu")
    assert (cfg.scheduler.name, cfg.scheduler.batch_size) == ("static", 4)
    assert "threads" not in raw and trace.num_tokens > 0


def test_execute_help_lists_its_keys_and_the_config_groups():
    from traces.execute import ExecuteOptions, usage

    text = usage()
    for f in ExecuteOptions.__dataclass_fields__:
        assert f"  {f}=" in text
    assert "scheduler: static" in text and "exit.kv_policy" in text


@pytest.mark.parametrize("config, argv, says", [
    ("uptrain", ["max_stepz=2"], "max_stepz is not a traces.uptrain key; did you mean max_steps?"),
    ("uptrain", ["max_steps=abc"], "must be int"),
    ("uptrain", ["lr=fast"], "must be float"),
    ("uptrain", ["scheduler=static"], "scheduler is not a traces.uptrain key"),
    ("record", [], "checkpoint is required"),
    ("record", ["checkpoint=/no/such.pt"], "checkpoint=/no/such.pt: no such file"),
    ("record", ["checkpoint=README.md", "batchh=3"], "did you mean batch?"),
])
def test_hydra_commands_refuse_mistakes_in_one_line(config, argv, says):
    from traces.cli import check_hydra_command

    with pytest.raises(ConfigError) as err:
        check_hydra_command(config, argv, f"traces.{config}", input_files=("checkpoint",) if config == "record" else ())
    assert says in str(err.value) and "\n" not in str(err.value) and "use +" not in str(err.value)


def test_hydra_commands_accept_what_their_yaml_has():
    from traces.cli import check_hydra_command

    cfg = check_hydra_command("uptrain", ["name=x", "max_steps=2", "lr=1e-3", "amp=true"], "traces.uptrain")
    assert (cfg.max_steps, cfg.out_dir) == (2, "runs/uptrain/x")
    assert check_hydra_command("uptrain", ["--help"], "traces.uptrain") is None  # Hydra's own flags: Hydra's


def test_record_refuses_to_replace_a_trace_before_loading():
    from traces.record import check_command

    with pytest.raises(ConfigError, match="overwrite=true"):
        check_command(["checkpoint=README.md", "name=smollm2_r2_mc_r64_coda"])


@pytest.mark.parametrize("argv, says", [
    (["--batches", "8,x"], "--batches"),
    (["--schedulers", "static,foo"], "'foo' is not known"),
    (["--trace", "/no/such.parquet"], "no such file"),
    (["--profile", "README.md"], "not a JSON profile"),
])
def test_validate_checks_inputs_before_a_model(argv, says):
    from traces.validate import check_args, parser

    with pytest.raises(ConfigError, match=says):
        check_args(parser().parse_args(argv))


@pytest.mark.parametrize("module", ["traces.validate", "traces.profile_steps"])
def test_option_commands_refuse_overrides_and_typos_in_one_line(module, capsys):
    import importlib

    ap = importlib.import_module(module).parser()
    for argv in (["--pointz", "3"], ["scheduler=static"]):
        with pytest.raises(SystemExit) as done:
            ap.parse_args(argv)
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.strip().count("\n") == 0


def test_new_profiles_default_under_runs_not_over_the_bundled_one():
    from sim.cost_profiled import BUNDLED
    from traces.profile_steps import default_profile_path, parser
    from traces.validate import parser as validate_parser

    path = default_profile_path("cpu", "smollm2_135m_r2_mc")
    assert path.parts[:2] == ("runs", "profiles") and path.name.endswith("_smollm2_135m_r2_mc.json")
    assert parser().parse_args([]).out is None and validate_parser().parse_args([]).profile_out is None
    assert path.resolve() != BUNDLED.resolve()


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["traces.execute", "schedular=depthwise"],
                                  ["traces.uptrain", "max_stepz=2"],
                                  ["traces.record", "checkpoint=/no/such.pt"]])
def test_command_line_mistakes_end_in_one_line_and_exit_2(argv, tmp_path):
    p = subprocess.run([sys.executable, "-m", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error:") and p.stderr.strip().count("\n") == 0, p.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_execute_keys_never_shadow_a_sim_run_key():
    from dataclasses import fields

    from sim.config import RunConfig
    from traces.execute import ExecuteOptions

    assert not {f.name for f in fields(ExecuteOptions)} & {f.name for f in fields(RunConfig)}


@pytest.mark.parametrize("module", ["traces.uptrain", "traces.record", "traces.execute", "traces.validate",
                                    "traces.profile_steps"])
def test_without_torch_every_command_says_install_cpu_torch_first(module):
    code = (f"import runpy, sys; sys.modules['torch'] = None; sys.argv = ['{module}']; "
            f"runpy.run_module('{module}', run_name='__main__')")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0, p.stderr[-500:]
    assert p.stderr.index("pip install torch==2.13.0") < p.stderr.index("pip install -e '.[traces]'")
