"""The command-line conventions of the `traces` commands, in one place.

One style per command, never two in one (issue 29):
- `key=value` overrides, as `sim.run` takes them: `traces.execute` (sim.run's config tree
  plus its own keys, declared as one dataclass: `parse_key_values`), `traces.uptrain` and
  `traces.record` (Hydra over traces/conf/*.yaml: `check_hydra_command`);
- plain `--options`: `traces.validate`, `traces.profile_steps` (`OneLineParser`).
Either way a config mistake (unknown key or option, misspelled key, bad value, missing
input file) is one line on stderr and exit code 2, found before any model loads: loading
one takes seconds, and a traceback would only hide the message.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

from sim.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent / "conf"
HELP_FLAGS = ("-h", "--help")


def torch_missing(command: str) -> bool:
    """True (after one line on stderr) when torch is not installed: the real-execution
    commands need it, the simulator does not. The CPU build first, by its exact version,
    so that the traces extra does not pull a multi-GB CUDA build."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print(f"error: {command} needs torch: pip install torch==2.13.0 first (the CPU build; "
              "another version may pull a multi-GB CUDA build), then pip install -e '.[traces]'",
              file=sys.stderr)
        return True
    return False


def fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def run_options_command(command: str, parser: argparse.ArgumentParser, run, argv: Sequence[str]) -> int:
    """The main of an `--options` command: torch checked, options parsed, `run(args, argv)` called,
    and a user error it raises reported in one line (exit 2)."""
    if torch_missing(command):
        return 2
    from sim.errors import UserError

    args = parser.parse_args(argv)
    try:
        return run(args, list(argv))
    except UserError as exc:
        return fail(exc)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one `error:` line (exit 2) instead of usage + error."""

    def error(self, message: str):  # noqa: D401 (argparse's hook)
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _close(key: str, known: Iterable[str]) -> str:
    near = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {near[0]}?" if near else ""


def _refuse_flags(argv: Sequence[str], known: Iterable[str], command: str) -> None:
    known = list(known)
    for a in argv:
        if a.startswith("-") and a not in HELP_FLAGS:
            name = a.lstrip("-").split("=")[0].replace("-", "_")
            hint = f": write {name}=VALUE" if name in known else _close(name, known)
            raise ConfigError(f"{a}: {command} takes key=value overrides, not --options{hint}")


# ---- key=value commands with their own keys beside sim.run's (traces.execute)

def key_value_usage(options_cls: type) -> str:
    """One line per key of an options dataclass: `key=VALUE (default ...) help`."""
    lines = []
    for f in fields(options_cls):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        shown = "null" if default is None else str(default).lower() if isinstance(default, bool) else default
        lines.append(f"  {f'{f.name}={shown}':<28} {f.metadata.get('help', '')}")
    return "\n".join(lines)


def parse_key_values(argv: Sequence[str], options_cls: type, command: str) -> tuple[Any, list[str]]:
    """Split a command line into the command's own keys (the fields of `options_cls`,
    typed and checked) and the rest (sim.run overrides, checked when composed)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    names = {f.name for f in fields(options_cls)}
    _refuse_flags(argv, names, command)
    own = [a for a in argv if a.split("=", 1)[0] in names]
    for a in own:
        if "=" not in a:
            raise ConfigError(f"{a}: give a value ({a}=VALUE)")
    try:
        opts = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(options_cls), OmegaConf.from_dotlist(own)))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}" if key else str(exc).splitlines()[0]) from None
    return opts, [a for a in argv if a not in own]


# ---- Hydra-main commands (traces.uptrain, traces.record)

def _same_type(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True  # strings and nulls take anything (e.g. amp: auto | true | false)


def check_hydra_command(config_name: str, argv: Sequence[str], command: str,
                        input_files: Iterable[str] = ()):
    """Check a Hydra command line against traces/conf/<config_name>.yaml before the
    command runs: every key exists (a typo gets the nearest key, not Hydra's "use +key"),
    every value has its default's type, required keys are given, the input files named by
    `input_files` keys exist and a CUDA device is there. A ConfigError otherwise.
    Returns the composed config; None (nothing checked) when the line has Hydra's own
    flags (--help, --cfg, -m ...): those are Hydra's to handle."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    if any(a.startswith("-") for a in argv):
        return None
    base = OmegaConf.load(CONF_DIR / f"{config_name}.yaml")
    keys = [k for k in base if k not in ("hydra", "defaults")]
    try:
        parsed = OverridesParser.create().parse_overrides(list(argv))
    except HydraException as exc:
        raise ConfigError(str(exc).strip().splitlines()[0]) from None
    for o in parsed:
        key = o.key_or_group
        if key.split(".")[0] in ("hydra", *keys) or o.is_add() or key.startswith("hydra/"):
            continue
        raise ConfigError(f"{key} is not a {command} key{_close(key, keys)} (keys: traces/conf/{config_name}.yaml)")
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=list(argv))
    except HydraException as exc:
        from sim.api import hydra_error  # only here: it fills Hydra's ConfigStore with sim's schemas

        raise hydra_error(exc) from None
    given = {o.key_or_group for o in parsed}
    for key in keys:
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key} is required: {command} {key}=VALUE")
        if key in given and not OmegaConf.is_missing(base, key) and not _same_type(base[key], cfg[key]):
            raise ConfigError(f"{key}={cfg[key]!r}: must be {type(base[key]).__name__} like its default {base[key]!r}")
    for key in input_files:
        if not Path(str(cfg[key])).is_file():
            raise ConfigError(f"{key}={cfg[key]}: no such file")
    check_device(str(cfg.device), f"device={cfg.device}")
    return cfg


def check_device(device: str, named: str) -> None:
    """A CUDA device this torch build cannot see, refused before any model loads."""
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"{named} but this torch build ({torch.__version__}) sees no CUDA device; use cpu")


def run_checked(check, argv: Sequence[str]) -> None:
    """Run `check(argv)`; on a ConfigError print its one line and exit 2."""
    try:
        check(argv)
    except ConfigError as exc:
        raise SystemExit(fail(exc)) from None
