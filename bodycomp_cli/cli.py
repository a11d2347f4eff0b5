"""The `bodycomp` console entry point: a Typer app whose commands live in bodycomp_cli.commands.

This module must not import torch (directly or through the command modules): `bodycomp --help`
and the prepare commands have to start in well under a second.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from bodycomp_cli import __version__
from bodycomp_cli.commands import demo, estimate, import_keras, prepare, train

app = typer.Typer(
    name="bodycomp",
    help="Prepare CT data, train and apply the segmentation and slice-selection models of a CT "
    "body-composition estimator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

for module in (prepare, train, estimate, import_keras, demo):
    module.register(app)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"bodycomp {__version__}")
        raise typer.Exit()


@app.callback()
def _app_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version (as run folders record it)."
        ),
    ] = False,
) -> None:
    pass


def _looks_like_level(token: str) -> bool:
    # A greedy -L stops at the next flag, or at a token that is clearly a path (so that
    # `-L T5 L3 data/ models/` still leaves the positional arguments alone).
    return (
        not token.startswith("-")
        and "/" not in token
        and "\\" not in token
        and "." not in token
        and not os.path.exists(token)
    )


def _looks_like_integer(token: str) -> bool:
    return token.isdigit()


# Options that take several space-separated values after one flag, as argparse's nargs='+' did in the original,
# and how to tell where their values end.
GREEDY_OPTIONS = {
    "levels": _looks_like_level,
    "compression_channels": _looks_like_integer,
    "decompression_channels": _looks_like_integer,
}


def _make_greedy(option, accepts=_looks_like_level) -> None:  # noqa: ANN001 - a (vendored) click Option
    """Let a list option (-L, -C, -M) take several space-separated values after one flag."""
    base = type(option)

    class GreedyOption(base):  # type: ignore[misc, valid-type]
        def add_to_parser(self, parser, ctx):  # noqa: ANN001
            super().add_to_parser(parser, ctx)
            for name in self.opts:
                parser_option = parser._long_opt.get(name) or parser._short_opt.get(name)
                if parser_option is None:
                    continue
                original = parser_option.process

                def process(value, state, _original=original):  # noqa: ANN001
                    _original(value, state)
                    while state.rargs and accepts(state.rargs[0]):
                        _original(state.rargs.pop(0), state)

                parser_option.process = process

    option.__class__ = GreedyOption


def build_command():  # noqa: ANN201 - typer.main.get_command returns its vendored click type
    """The click command tree of the app, with greedy `-L`, `-C` and `-M` options. Tests invoke this."""
    command = typer.main.get_command(app)
    subcommands = getattr(command, "commands", {})
    for sub in subcommands.values():
        for param in sub.params:
            # Typer vendors its own click, so test the parameter's kind rather than click.Option.
            if getattr(param, "param_type_name", None) == "option" and param.name in GREEDY_OPTIONS:
                _make_greedy(param, GREEDY_OPTIONS[param.name])
    return command


def main() -> None:
    build_command()(prog_name="bodycomp")


if __name__ == "__main__":
    main()
