"""The greedy -L/-C/-M patch (commands/greedy.py) reaches into typer's vendored click: pin what it was tested on."""

from __future__ import annotations

from importlib.metadata import version

from bodycomp_cli.cli import build_command
from bodycomp_cli.commands.greedy import GREEDY_OPTIONS

# The Typer releases (each vendoring its own click, typer._click) the patch was tested with. A new one: run this
# file; if it passes, widen the range; if not, adapt commands/greedy.py (or use a public API, if one appears).
TESTED_TYPER = ((0, 29), (0, 29))  # (major, minor), lowest and highest


def test_typer_is_a_tested_version():
    installed = tuple(int(part) for part in version("typer").split(".")[:2])
    low, high = TESTED_TYPER
    assert low <= installed <= high, f"typer {version('typer')}: commands/greedy.py was tested with {low} to {high}"


def test_the_patched_private_parts_are_there():
    from typer._click.parser import _Option, _OptionParser

    parser = _OptionParser()
    assert hasattr(parser, "_long_opt") and hasattr(parser, "_short_opt")
    assert callable(_Option.process)


def test_levels_then_positional_arguments(tmp_path):
    train_select = build_command().commands["train-select"]
    ctx = train_select.make_context("train-select", ["-L", "T5", "T8", "L3", "data/", "models/"])
    assert ctx.params["levels"] == ["T5", "T8", "L3"]
    assert (str(ctx.params["data_dir"]), str(ctx.params["models_dir"])) == ("data", "models")


def test_channel_lists_take_integers_only():
    train_seg = build_command().commands["train-seg"]
    ctx = train_seg.make_context("train-seg", ["-C", "8", "16", "32", "-M", "16", "8", "data/", "models/"])
    assert ctx.params["compression_channels"] == [8, 16, 32]
    assert ctx.params["decompression_channels"] == [16, 8]


def test_every_greedy_option_exists():
    names = {p.name for sub in build_command().commands.values() for p in sub.params}
    assert set(GREEDY_OPTIONS) <= names
