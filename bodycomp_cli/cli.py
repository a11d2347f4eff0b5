"""The `bodycomp` console entry point: a Typer app whose commands live in bodycomp_cli.commands.

This module must not import torch (directly or through the command modules): `bodycomp --help`
and the prepare commands have to start in well under a second.
"""

from __future__ import annotations

from typing import Annotated

import typer

from bodycomp_cli import __version__
from bodycomp_cli.commands import demo, estimate, import_keras, prepare, train
from bodycomp_cli.commands.greedy import make_greedy_options
from bodycomp_cli.commands.help_layout import tidy_help

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


def build_command():  # noqa: ANN201 - typer.main.get_command returns its vendored click type
    """The click command tree of the app, with greedy `-L`, `-C` and `-M` options (commands/greedy.py), one name
    per option in --help and initials matched in 'No such option' (commands/help_layout.py)."""
    return tidy_help(make_greedy_options(typer.main.get_command(app)))


def main() -> None:
    build_command()(prog_name="bodycomp")


if __name__ == "__main__":
    main()
