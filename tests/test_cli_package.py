"""The CLI package: each module imports on its own, every command and group has help, and the
shared error handling turns jetgrid's errors into one line.

Importing a command module first, in a fresh interpreter, is what exposed the old cycle (the
commands imported helpers back from the module that imported them to register them): importing
them all in one process would hide it, so each gets its own.
"""

from __future__ import annotations

import ast
import importlib.metadata
import pkgutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import jetgrid.cli
from jetgrid.cli import main
from jetgrid.cli.shared import run_async
from jetgrid.events import ConfigError

CLI_DIR = Path(jetgrid.cli.__file__).parent
SUBMODULES = sorted(m.name for m in pkgutil.walk_packages(jetgrid.cli.__path__, "jetgrid.cli."))
MODULES = ["jetgrid.cli", *SUBMODULES]


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under `command`, as the argument paths that reach them."""
    paths = [path]
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            paths += _commands(command.commands[name], (*path, name))
    return paths


COMMANDS = _commands(main)


def test_the_package_has_its_modules() -> None:
    assert {"jetgrid.cli.shared", "jetgrid.cli.__main__", "jetgrid.cli.pools"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_in_a_fresh_interpreter(module: str) -> None:
    code = f"import importlib; importlib.import_module({module!r})"
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"import {module} failed:\n{done.stderr}"


@pytest.mark.parametrize("path", sorted(CLI_DIR.glob("*.py")), ids=lambda p: p.name)
def test_command_modules_never_import_the_package(path: Path) -> None:
    """The dependency goes one way: jetgrid/cli/__init__.py imports the commands."""
    if path.name in ("__init__.py", "__main__.py"):
        return
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: use absolute imports"
            assert node.module != "jetgrid.cli", f"{path.name} imports from jetgrid.cli"
        elif isinstance(node, ast.Import):
            assert "jetgrid.cli" not in [a.name for a in node.names], path.name


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "jetgrid")
def test_every_command_and_group_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    assert len((command.help or "").split()) >= 6, f"{path} needs a real description"


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jetgrid.cli", "model-token", "llama3.2:1b"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "llama3_2E2_3A1b\n"


def test_the_console_script_is_the_group() -> None:
    [script] = importlib.metadata.entry_points(group="console_scripts", name="jetgrid")
    assert script.value == "jetgrid.cli:main"
    assert script.load() is main


def _failing(exc: BaseException) -> click.Command:
    @click.command()
    @run_async
    async def fail() -> None:
        raise exc

    return fail


def test_run_async_turns_a_jetgrid_error_into_one_line() -> None:
    message = "Setting 'nats_port' has value 'x'. Use a port number."
    result = CliRunner().invoke(_failing(ConfigError(message)), [])
    assert result.exit_code == 1
    assert result.output == f"Error: {message}\n"


def test_run_async_exits_130_on_ctrl_c() -> None:
    result = CliRunner().invoke(_failing(KeyboardInterrupt()), [])
    assert result.exit_code == 130
    assert result.output == ""


ERRORS = [
    (["submit", "--model", "echo", "--input", "[1]"], "--input: [1] is not a JSON object"),
    (["submit", "--model", "echo", "--prompt", "hi", "--id", "bad id"], "--id: job_id 'bad id'"),
    (["submit", "--model", "echo", "--prompt", "hi", "--timeout", "-5"], "--timeout: "),
    (["cancel", "bad id"], "job id 'bad id' must be"),
    (["replay", "--db", "{tmp}/missing/replay.db"], "its directory does not exist; create it"),
    (["keys", "add", "k", "--data-dir", "{tmp}/file/sub"], "Cannot use '{tmp}/file/sub"),
    (["keys", "list", "--keys-file", "{tmp}/file"], "fix or remove it"),
    (["worker-credentials", "add", "bad.id", "--data-dir", "{tmp}"], "worker id 'bad.id'"),
    (["credentials", "client", "--data-dir", "{tmp}"], "No credentials in"),
]


@pytest.mark.parametrize(("args", "says"), ERRORS, ids=[" ".join(a) for a, _ in ERRORS])
def test_user_errors_are_one_line(args: list[str], says: str, tmp_path: Path) -> None:
    """Each is caught before any NATS connection (none answers at the URL given)."""
    (tmp_path / "file").write_text("not a key hash\n")
    runner = CliRunner(env={"JETGRID_NATS_URL": "nats://127.0.0.1:1"})
    result = runner.invoke(main, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code in (1, 2), result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not a traceback
    [line] = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert says.format(tmp=tmp_path) in line
