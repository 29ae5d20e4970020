"""The command-line tools: every console entry point of setup.py answers --help, and every tool
reports errors through the one runner (reid_srdl/core/cli.py): one line on stderr, the exit
code of its table.

The entry points are read from setup.py itself (the package is installed editable from another
checkout, so its installed metadata may be older than this tree) and called in-process.
"""

import ast
import errno
import glob
import importlib
import os
import runpy
import sys

import pytest

from reid_srdl.core import cli
from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.engine.loop import TrainingDivergedError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(REPO, "tools", "*.py")))


def console_scripts():
    """``{command: "module:function"}`` from setup.py's ``entry_points`` (read, not run)."""
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            entries = ast.literal_eval(node.value)["console_scripts"]
            return dict(line.replace(" ", "").split("=", 1) for line in entries)
    raise AssertionError("setup.py declares no entry_points")


def target(spec):
    module, function = spec.split(":")
    return getattr(importlib.import_module(module), function)


SCRIPTS = console_scripts()


def test_the_four_named_commands_and_one_per_tool_exist():
    assert {"reid-train", "reid-eval", "reid-search", "reid-serve"} <= set(SCRIPTS)
    # Every tools/NAME.py a user runs has an installed command running the same main.
    assert sorted(spec.split(":")[0].rsplit(".", 1)[1] for spec in SCRIPTS.values()) == TOOLS
    assert all(spec.startswith("reid_srdl.cli.") and spec.endswith(":main") for spec in SCRIPTS.values())


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_every_entry_point_answers_help(command, capsys):
    with pytest.raises(SystemExit) as stop:
        target(SCRIPTS[command])(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and "--help" in out


@pytest.mark.parametrize("tool", TOOLS)
def test_the_script_is_the_command_module(tool, monkeypatch):
    """`python tools/NAME.py` runs reid_srdl.cli.NAME's main and exits with what it returns, so
    the script and the installed command run one main (run here as the script's __main__)."""
    path = os.path.join(REPO, "tools", f"{tool}.py")
    calls = []
    monkeypatch.setattr(importlib.import_module(f"reid_srdl.cli.{tool}"), "main", lambda: calls.append(tool) or 7)
    monkeypatch.setattr(sys, "argv", [path, "--help"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(path, run_name="__main__")
    assert stop.value.code == 7 and calls == [tool]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert "sys.path.insert" not in text and "EXIT_BAD_INPUT" not in text


@pytest.mark.parametrize("tool", TOOLS)
def test_a_project_error_inside_any_tool_is_one_line_and_exit_2(tool, capsys, monkeypatch):
    module = importlib.import_module(f"reid_srdl.cli.{tool}")

    def refuse(argv=None):
        raise ReidSrdlError(f"{tool}: bad value for --x\n  (a detail on a second line)")

    monkeypatch.setattr(module, "parse_args", refuse)  # raised inside the tool's command
    assert module.main([]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {tool}: bad value for --x\n" and captured.out == ""


def run(exc, argv=(), **options):
    def command(_argv):
        raise exc

    return cli.run(command, list(argv) if argv is not None else None, **options)


def test_the_runner_maps_errors_by_its_table(capsys):
    assert cli.run(lambda argv: None, []) == 0
    assert cli.run(lambda argv: 5, []) == 5
    assert run(OSError(errno.ENOSPC, "No space left on device", "/out/model.onnx")) == 2
    assert capsys.readouterr().err == "error: /out/model.onnx: no space left on device\n"
    assert run(FileExistsError("'x' already exists")) == 2
    assert capsys.readouterr().err == "error: 'x' already exists\n"
    assert run(TrainingDivergedError("loss is nan at epoch 3")) == 3
    assert capsys.readouterr().err == "error: loss is nan at epoch 3\n"
    assert run(ValueError("n must be >= 1"), bad_input=(ValueError,)) == 2
    assert capsys.readouterr().err == "error: n must be >= 1\n"
    assert run(BrokenPipeError(errno.EPIPE, "Broken pipe")) == 2
    assert capsys.readouterr().err == "error: the output was closed before the end (broken pipe)\n"


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        run(ZeroDivisionError("division by zero"))
    with pytest.raises(ValueError):  # a plain ValueError is bad input only where a tool says so
        run(ValueError("n must be >= 1"))


def test_ctrl_c(capsys):
    with pytest.raises(KeyboardInterrupt):  # a Python caller (argv given) decides itself
        run(KeyboardInterrupt())
    assert run(KeyboardInterrupt(), argv=None) == 130  # a program: one line
    assert capsys.readouterr().err == "\ninterrupted\n"
    assert run(KeyboardInterrupt(), interrupted="interrupted; continue with --resume") == 130
    assert capsys.readouterr().err == "\ninterrupted; continue with --resume\n"


def test_a_distributed_process_names_itself_and_each_run_starts_unnamed(capsys):
    def command(argv):
        cli.name_process(" (rank 1 of 2)")
        raise ReidSrdlError("cannot claim the run folder")

    assert cli.run(command, []) == 2
    assert run(ReidSrdlError("later")) == 2
    assert capsys.readouterr().err == "error (rank 1 of 2): cannot claim the run folder\nerror: later\n"
