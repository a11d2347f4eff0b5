import subprocess
import sys

import typer
from conftest import invoke

from bodycomp_cli.commands.common import levels_option, report_user_errors

SUBCOMMANDS = [
    "prepare-seg",
    "prepare-slices",
    "train-seg",
    "train-select",
    "estimate",
    "evaluate",
    "phantoms",
    "demo",
]


def test_help_lists_every_subcommand():
    result = invoke(["--help"])
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert name in result.output


def test_cli_import_does_not_import_torch():
    code = "import sys, bodycomp_cli.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "bodycomp_cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "prepare-slices" in out.stdout


def _levels_probe():
    """A throwaway app with one -L option, patched the way cli.build_command patches the real one."""
    from bodycomp_cli.commands.greedy import make_greedy

    app = typer.Typer()
    seen = {}

    @app.command()
    @report_user_errors
    def probe(data: str, levels: levels_option("none") = None) -> None:
        seen["levels"] = levels
        seen["data"] = data

    @app.command()
    def other() -> None:
        pass

    command = typer.main.get_command(app)
    for sub in command.commands.values():
        for param in sub.params:
            if param.name == "levels":
                make_greedy(param)
    return command, seen


def test_levels_space_separated_after_one_flag(tmp_path):
    from click.testing import CliRunner

    command, seen = _levels_probe()
    result = CliRunner().invoke(command, ["probe", str(tmp_path), "-L", "T5", "T8", "T10", "L3"])
    assert result.exit_code == 0, result.output
    assert seen["levels"] == ["T5", "T8", "T10", "L3"]
    assert seen["data"] == str(tmp_path)


def test_levels_repeated_and_stops_at_paths(tmp_path):
    from click.testing import CliRunner

    command, seen = _levels_probe()
    result = CliRunner().invoke(command, ["probe", "-L", "T5", "-L", "L3", "T10", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert seen["levels"] == ["T5", "L3", "T10"]
    assert seen["data"] == str(tmp_path)


def test_real_commands_take_space_separated_levels(tmp_path):
    from bodycomp_cli.cli import build_command

    command = build_command()
    for name in ("prepare-slices", "train-select", "estimate"):
        assert any(p.name == "levels" for p in command.commands[name].params), name
    train_select = command.commands["train-select"]
    ctx = train_select.make_context("train-select", [str(tmp_path), "models", "-L", "T5", "T8", "T10", "L3"])
    assert ctx.params["levels"] == ["T5", "T8", "T10", "L3"]
    ctx = train_select.make_context("train-select", ["-L", "T5", "L3", str(tmp_path), "models"])
    assert ctx.params["levels"] == ["T5", "L3"]
