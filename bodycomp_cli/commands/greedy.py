"""Greedy list options: `-L T5 T8 L3` (several values after one flag), as argparse's nargs='+' took them.

Why a patch: neither click nor the click that Typer vendors (typer._click, the one Typer's commands are built on)
has a public way for an option to take a variable number of values (click refuses nargs=-1 for options).
So each greedy option's parser entry is wrapped to keep taking the following tokens while they look like its
values. This touches private parts of typer._click (_OptionParser._long_opt / _short_opt, _Option.process) and
swaps the option's class; tests/test_greedy.py pins the Typer versions it was tested with.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


def looks_like_level(token: str) -> bool:
    """A greedy -L stops at the next flag, or at a token that is clearly a path (so that
    `-L T5 L3 data/ models/` still leaves the positional arguments alone)."""
    return (
        not token.startswith("-")
        and "/" not in token
        and "\\" not in token
        and "." not in token
        and not os.path.exists(token)
    )


def looks_like_integer(token: str) -> bool:
    return token.isdigit()


# Options (by parameter name) that take several space-separated values after one flag, and how to tell where
# their values end.
GREEDY_OPTIONS: dict[str, Callable[[str], bool]] = {
    "levels": looks_like_level,
    "compression_channels": looks_like_integer,
    "decompression_channels": looks_like_integer,
}


def make_greedy(option: Any, accepts: Callable[[str], bool] = looks_like_level) -> None:
    """Let a list option (-L, -C, -M) take every following token that ACCEPTS says is one of its values."""
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


def make_greedy_options(command: Any) -> Any:
    """COMMAND (a click group of Typer's) with every option named in GREEDY_OPTIONS made greedy; returns it."""
    for sub in getattr(command, "commands", {}).values():
        for param in sub.params:
            # Typer vendors its own click, so test the parameter's kind rather than click.Option.
            if getattr(param, "param_type_name", None) == "option" and param.name in GREEDY_OPTIONS:
                make_greedy(param, GREEDY_OPTIONS[param.name])
    return command
