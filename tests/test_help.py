"""Every command's --help at 80 columns: nothing cut, and every option's default shown, written one way."""

from __future__ import annotations

import io
from enum import Enum

import pytest
from click.testing import CliRunner

from bodycomp_cli.cli import build_command

COMMANDS = sorted(build_command().commands)


def render_help(command: str) -> str:
    env = {"COLUMNS": "80", "TERMINAL_WIDTH": "80", "NO_COLOR": "1"}
    result = CliRunner().invoke(build_command(), [command, "--help"], env=env, terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def option_cells(text: str) -> dict[str, str]:
    """Each option's row of the help panels, by its first shown name, with all whitespace and borders removed."""
    cells: dict[str, str] = {}
    panels: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("╭"):
            panels.append([])
        elif line.startswith("│") and panels:
            panels[-1].append(line.strip("│"))
    for lines in panels:
        # A row begins where a line has an option name in the names column, the leftmost "-" of the panel.
        starts = [len(line) - len(line.lstrip(" *")) for line in lines if line.lstrip(" *").startswith("-")]
        column, name = min(starts, default=0), None
        for line in lines:
            if line.lstrip(" *").startswith("-") and len(line) - len(line.lstrip(" *")) == column:
                name = line.lstrip(" *").split()[0]
                cells[name] = ""
            if name is not None:
                cells[name] += "".join(line.split())
    return cells


def expected_default(param) -> str | None:  # noqa: ANN001
    """What `[default: X]` must say for PARAM, as the help's words; '' where the help writes it by hand;
    None for a plain switch that is off unless given."""
    if param.is_flag and not param.secondary_opts and not param.default:
        return None
    if param.default is None or param.show_default is False:
        return ""
    if param.secondary_opts:  # --previews/--no-previews: Typer names the one in force
        return (param.opts if param.default else param.secondary_opts)[0].lstrip("-")
    value = param.default.value if isinstance(param.default, Enum) else param.default
    return str(value)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_at_80_columns_shows_every_default(command):
    text = render_help(command)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text  # no option name or default cut short
    cells = option_cells(text)
    options = [p for p in build_command().commands[command].params if p.param_type_name == "option"]
    for param in options:
        if param.hidden or param.required or param.name == "help":
            continue
        cell = cells[next(name for name in param.opts if name.startswith("--"))]
        default = expected_default(param)
        if default is None:
            assert "[default:" not in cell, param.name
        elif default:
            assert f"[default:{''.join(default.split())}]" in cell, (param.name, cell)
        else:
            assert "[default:" in cell, (param.name, cell)  # written by hand: the default is computed
        assert cell.count("[default:") <= 1, (param.name, cell)


def test_train_options_sit_in_panels():
    text = render_help("train-select")
    for panel in ("Data", "Model", "Optimisation", "Devices", "Original toolkit"):
        assert f"─ {panel}" in text
    # The original's spellings stay accepted but are named once, in the help text.
    assert "--learning-rate,--learning_rate" not in text
    assert "Also --learning_rate." in "".join(text.split(" ")).replace("Also", "Also ")


def test_a_guessed_abbreviation_points_to_the_option(cli, tmp_path):
    result = cli(["train-select", tmp_path, tmp_path, "--lr", "0.1"])
    assert result.exit_code == 2
    assert "No such option: --lr. Did you mean -l/--learning-rate?" in result.output + result.stderr


def test_ctrl_c_prints_the_stages_resume_hint_once(capsys):
    from bodycomp_cli.commands.common import report_user_errors

    @report_user_errors
    def stage() -> None:
        raise KeyboardInterrupt("interrupted: run/checkpoint_last.pt holds epoch 3. To resume, ... --resume")

    with pytest.raises(Exception) as stopped:
        stage()
    assert stopped.value.exit_code == 130
    err = capsys.readouterr().err
    assert err.count("interrupted") == 1 and "--resume" in err


def test_estimate_ctrl_c_says_how_to_resume_once(cli, tmp_path, monkeypatch):
    """Ctrl-C in estimate names what results.csv keeps and the --resume that continues it, once."""
    from types import SimpleNamespace

    import numpy as np

    import bodycomp_cli.estimate.models as models
    import bodycomp_cli.estimate.run as run

    z = np.arange(30, dtype=float) * 4.0
    np.savez(tmp_path / "a.npz", hu=np.zeros((30, 8, 8), dtype=np.int16), z_mm=z)
    monkeypatch.setattr(models, "load_estimator_models", lambda *args, **kwargs: SimpleNamespace(levels=["L3"]))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "run_estimate", interrupted)
    out = tmp_path / "out"
    result = cli(["estimate", tmp_path / "a.npz", "--select-model", tmp_path, "--seg-model", tmp_path, "-o", out])
    err = result.output if result.stderr in result.output else result.stderr + result.output  # click >= 8.2 mixes
    assert result.exit_code == 130, err
    assert err.count("interrupted") == 1
    assert f"{out / 'results.csv'} keeps the series finished so far" in err and "--resume" in err


def test_evaluate_table_never_cuts_a_tissue_name_at_80_columns():
    from rich.console import Console

    from bodycomp_cli.commands.estimate import _table

    console = Console(width=80, record=True, file=io.StringIO())
    columns = ("tissue", "Dice (mean)", "Dice (pooled)", "|area error| px", "area error px")
    console.print(
        _table("evaluate models/seg_demo on seg_data (val)", [("subcutaneous_fat", "0.4", "0.4", "2", "-2")], columns)
    )
    assert "│ subcutaneous_fat │" in console.export_text()
