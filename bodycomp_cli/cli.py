"""The `bodycomp` console entry point: a Typer app whose commands live in bodycomp_cli.commands.

This module must not import torch (directly or through the command modules): `bodycomp --help`
and the prepare commands have to start in well under a second.
"""

from __future__ import annotations

import os

import typer

from bodycomp_cli.commands import demo, estimate, prepare, train

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

for module in (prepare, train, estimate, demo):
    module.register(app)


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


def _make_greedy(option) -> None:  # noqa: ANN001 - a (vendored) click Option
    """Let `-L` take several space-separated values, as argparse's nargs='+' did in the original."""
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
                    while state.rargs and _looks_like_level(state.rargs[0]):
                        _original(state.rargs.pop(0), state)

                parser_option.process = process

    option.__class__ = GreedyOption


def build_command():  # noqa: ANN201 - typer.main.get_command returns its vendored click type
    """The click command tree of the app, with greedy `-L` options. Tests invoke this."""
    command = typer.main.get_command(app)
    subcommands = getattr(command, "commands", {})
    for sub in subcommands.values():
        for param in sub.params:
            # Typer vendors its own click, so test the parameter's kind rather than click.Option.
            if getattr(param, "param_type_name", None) == "option" and param.name == "levels":
                _make_greedy(param)
    return command


def main() -> None:
    build_command()(prog_name="bodycomp")


if __name__ == "__main__":
    main()
