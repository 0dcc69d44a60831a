"""traces.precision: `auto` picks bf16 only where the CPU computes it natively (emulated
bf16 trains ~4x slower than fp32 on an AVX-512 CPU without bf16 units). No torch needed."""
import argparse
from pathlib import Path

import pytest

from sim.errors import ConfigError
from traces import precision


@pytest.fixture
def flags(monkeypatch):
    def set_flags(*names):
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(names))
    return set_flags


@pytest.mark.parametrize("have,want", [(("avx512f", "amx_bf16", "amx_tile"), "bfloat16"),
                                       (("avx512f", "avx512_bf16"), "bfloat16"),
                                       (("avx512f", "avx512bw", "avx512_vnni"), "float32"),
                                       ((), "float32")])
def test_auto_dtype_follows_the_cpu_flags(flags, have, want):
    flags(*have)
    name, why = precision.resolve_dtype("auto", "cpu")
    assert name == want
    assert ("emulated" in why) == (want == "float32")
    assert precision.resolve_amp("auto", "cpu")[0] == (want == "bfloat16")


def test_explicit_choices_pass_through_whatever_the_cpu(flags):
    flags()
    assert precision.resolve_dtype("bfloat16", "cpu")[0] == "bfloat16"
    assert precision.resolve_amp(True, "cpu")[0] is True
    flags("amx_bf16")
    assert precision.resolve_dtype("float32", "cpu")[0] == "float32"
    assert precision.resolve_amp(False, "cpu")[0] is False


def test_bad_values_are_refused():
    with pytest.raises(ConfigError, match="float16"):
        precision.resolve_dtype("float16", "cpu")
    with pytest.raises(ConfigError, match="maybe"):
        precision.resolve_amp("maybe", "cpu")


def test_dtype_option_defaults_to_auto_and_says_what_it_chose(flags, capsys):
    flags("avx512f")
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    precision.add_dtype_option(ap)
    assert precision.dtype_from_args(ap.parse_args([])) == "float32"
    assert "dtype float32" in capsys.readouterr().err
    assert precision.dtype_from_args(ap.parse_args(["--dtype", "bfloat16"])) == "bfloat16"
    with pytest.raises(SystemExit):
        ap.parse_args(["--dtype", "half"])


def test_uptrain_config_defaults_to_auto():
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(precision.__file__).parent / "conf" / "uptrain.yaml")
    assert cfg.amp == "auto" and cfg.teacher_dtype == "auto"
