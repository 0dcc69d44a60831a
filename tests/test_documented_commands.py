"""Every `python -m` command the docs show keeps working as written (issue 30).

Commands are taken from README.md, traces/README.md and docs/*.md wherever a reader
would copy them: fenced code blocks, indented code blocks and inline code spans that
start with `python -m` (a trailing `# comment` is dropped, `\\` continuations joined).
So the test follows the docs as they are restructured: a new command is picked up, a
changed one is tested as changed. What happens to a command is decided by its module:

- RUN (the simulator, seconds each): run in a subprocess from a scratch directory
  (with `traces/` linked in, so repository paths resolve), in document order, so a
  command may use a file an earlier one wrote (`sim.synthetic big.parquet`, then
  `sim.run trace.path=big.parquet`). Sizes are scaled down (SCALED) to stay under a
  minute each. Exit code 0 required.
- PARSE (the real-execution commands: minutes and torch): the command line goes through
  the command's own checking (traces/cli.py conventions) without loading a model, so a
  doc with a wrong key, an old `--option` or a bad value fails here.
- SKIP (LONG, or not applicable, with the reason in `tier`): run elsewhere or not at all.

Not run either: a line starting with `nohup` (a background job; parsed when its module is
PARSE), a sweep (`-m`), a command with a placeholder (PLACEHOLDERS) the test cannot fill
in or with elided arguments (` ... `), and one that reads a file an unrun command would
have written (its skip reason says which). CUDA is not checked (`device=cuda` is parsed
as `device=cpu`).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "traces" / "README.md", *sorted((REPO / "docs").glob("*.md"))]

RUN = {"sim.run", "sim.synthetic"}
PARSE = {"traces.execute", "traces.uptrain", "traces.record", "traces.validate", "traces.profile_steps",
         "traces.frontier", "traces.quality"}
# The explicitly long or not-applicable ones, by module, with why.
LONG = {"analysis.figures": "regenerates every figure: minutes (tests/analysis/test_figures.py runs parts)",
        "analysis.paper_fit": "rewrites committed tables",
        "analysis.gpu_published": "rewrites committed tables (tests/sim/test_cost_gpu_profile.py reruns it)",
        "analysis.sweep": "gathers a sweep directory a sweep made",
        "analysis.exit_frontier": "redraws figures/data/exit_frontier.csv, which only a real traces.frontier run "
                                  "writes (tests/analysis/test_exit_frontier.py runs it on a CSV of its own)",
        "benchmarks.sim_speed": "a timing benchmark: minutes",
        "benchmarks.uptrain_speed": "a timing benchmark of the real model",
        "benchmarks.decode_speed": "a timing benchmark of the real model",
        "benchmarks.floor": "a timing benchmark of the real model and generate",
        "benchmarks.spec_agreement": "two real free-running runs of the real model: minutes",
        "traces.bench_generate": "a timing benchmark of the real model",
        "traces.card": "needs a recorded trace with its checkpoint's run",
        "traces.textpool": "samples text with the real model",
        "pytest": "the test suite itself", "pip": "installs packages", "venv": "makes an environment"}
SCALED = {"--num-requests": "300"}  # sim.synthetic: 10^7 tokens in the docs, 4 * 10^4 here
PLACEHOLDERS = ("<", ">", "...", "KEY=", "XXXX", "V1,V2")
FILLED = {"=PATH": "=README.md", "=S ": "=depthwise ", " P.json": " runs/p.json"}  # for PARSE only


def _spans(text: str) -> list[str]:
    """Candidate command texts: code block lines (fenced or indented) and inline spans."""
    out, fenced = [], False
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i].strip()
            out.append(line.strip())
        else:
            out += re.findall(r"`([^`]+)`", line)
        i += 1
    return out


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every `python -m` command in the docs, in document order."""
    found = []
    for doc in DOCS:
        for span in _spans(doc.read_text()):
            at = span.find("python -m ")
            if at < 0:
                continue
            command = span[at:].split(" # ")[0].split("  #")[0].strip()
            command = command.split(" && ")[0].split(" > ")[0].split(" >> ")[0]
            prefix = span[:at]
            found.append((f"{doc.relative_to(REPO)}", ("nohup " if "nohup" in prefix else "") + command))
    return found


def _module(command: str) -> str:
    words = command.split()
    return words[words.index("-m") + 1]


def _argv(command: str) -> list[str]:
    """The command's arguments after `python -m MODULE`."""
    words = shlex.split(command.removeprefix("nohup "))
    return words[3:]


def tier(command: str) -> tuple[str, str]:
    module = _module(command)
    if " ... " in f"{command} ":
        return "skip", "elided (...)"
    if "$PWD" in command:
        return "skip", "runs from the repository root with plugins in its environment (tests/sim/test_extending.py runs it)"
    if module in PARSE:
        return "parse", ""
    if command.startswith("nohup"):
        return "skip", "a background job"
    if module in LONG:
        return "skip", LONG[module]
    if module not in RUN | PARSE:
        return "skip", f"{module}: not classified (add it to RUN, PARSE or LONG)"
    argv = _argv(command)
    if module == "sim.run" and ("-m" in argv or "--multirun" in argv):
        return "skip", "a sweep"
    if any(p in command for p in PLACEHOLDERS) or "my_trace" in command:
        return "skip", "a placeholder"
    return "run", ""


COMMANDS = documented_commands()


def test_the_docs_show_commands_of_every_tier():
    tiers = {tier(c)[0] for _, c in COMMANDS}
    assert {"run", "parse"} <= tiers, tiers
    assert any("sim.synthetic" in c for _, c in COMMANDS if tier(c)[0] == "run")  # the big-trace pair
    assert not [c for _, c in COMMANDS if "not classified" in tier(c)[1]]  # every module has a decision


def _ids(cases):
    return [f"{where}:{_module(c)} {' '.join(_argv(c)[:2])}" for where, c in cases]


PARSED = [(w, c) for w, c in COMMANDS if tier(c)[0] == "parse"]
RAN = [(w, c) for w, c in COMMANDS if tier(c)[0] == "run"]


@pytest.mark.parametrize("where, command", PARSED, ids=_ids(PARSED))
def test_real_execution_commands_parse_as_documented(where, command):
    from traces.cli import check_hydra_command

    for a, b in FILLED.items():
        command = command.replace(a, b)
    module, argv = _module(command), [a.replace("device=cuda", "device=cpu") for a in _argv(command)]
    if module == "traces.execute":
        from traces.execute import parse
        parse(argv)
    elif module in ("traces.uptrain", "traces.record"):
        assert check_hydra_command(module.split(".")[1], argv, module) is not None
    else:  # the plain --options commands: each module's parser()
        from importlib import import_module
        import_module(module).parser().parse_args(argv)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    d = tmp_path_factory.mktemp("docs")
    (d / "traces").symlink_to(REPO / "traces")
    return d


def _scaled(argv: list[str]) -> list[str]:
    return [SCALED.get(argv[i - 1], a) if i else a for i, a in enumerate(argv)]


@pytest.mark.slow
@pytest.mark.parametrize("where, command", RAN, ids=_ids(RAN))
def test_simulator_commands_run_as_documented(where, command, scratch):
    argv = _scaled(shlex.split(command))
    for a in argv:
        if a.startswith("trace.path=") and not (scratch / a.split("=", 1)[1]).exists():
            pytest.skip(f"reads {a.split('=', 1)[1]}, which a command not run here writes")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    p = subprocess.run([sys.executable, *argv[1:]], cwd=scratch, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, f"{where}: {command}\n{p.stderr[-2000:]}"
