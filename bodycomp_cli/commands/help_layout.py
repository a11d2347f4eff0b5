"""How the commands read at 80 columns: one name per option in --help, and a pointer from a short guess (--lr).

The original toolkit's spellings (--learning_rate, --thoracic_model) stay accepted, but --help names each option
once, by its first long name, and lists the other spellings in the option's help text: at 80 columns a
names column of `--learning-rate,--learning_rate` leaves the description about 20 characters.
An unknown option whose letters are the initials of a known one (--lr: -l/--learning-rate, --bs:
-b/--batch-size) gets that one as its suggestion, where click's spelling match would offer --arch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def _long_names(param: Any) -> list[str]:
    return [name for name in param.opts if name.startswith("--")]


def _shown_names(param: Any) -> list[str]:
    longs = _long_names(param)
    return [name for name in param.opts if not name.startswith("--")] + longs[:1]


def _other_spellings(param: Any) -> list[str]:
    return _long_names(param)[1:]


@contextlib.contextmanager
def _one_name_each(params: list[Any]) -> Iterator[None]:
    """While --help renders: each option under its first long name (and short one), the rest in its help."""
    saved = [(param, param.opts, param.help) for param in params]
    try:
        for param in params:
            others = _other_spellings(param)
            if param.param_type_name == "option" and others:
                param.opts = _shown_names(param)
                text, also = param.help or "", f"Also {', '.join(others)}."
                head, mark, tail = text.partition("\\[default:")  # the spellings before a hand-written default
                param.help = f"{head}{also} {mark}{tail}".strip() if mark else f"{text} {also}".strip()
        yield
    finally:
        for param, opts, help_text in saved:
            param.opts, param.help = opts, help_text


def _initials(name: str) -> str:
    return "".join(word[:1] for word in name.lstrip("-").replace("_", "-").split("-") if word)


def initials_match(unknown: str, params: list[Any]) -> list[str]:
    """The options (as `-l/--learning-rate`) whose long name's word initials spell UNKNOWN (`--lr`)."""
    wanted = unknown.lstrip("-").lower()
    matches = []
    for param in params:
        longs = _long_names(param) if param.param_type_name == "option" else []
        if longs and len(wanted) > 1 and _initials(longs[0]) == wanted:
            matches.append("/".join(_shown_names(param)))
    return matches


def tidy_help(command: Any) -> Any:
    """COMMAND (Typer's click group) with one name per option in each subcommand's --help, and initials matched
    in 'No such option' errors; returns it."""
    from typer._click.exceptions import NoSuchOption  # the click Typer's commands are built on

    for sub in getattr(command, "commands", {}).values():
        original_format_help, original_parse_args = sub.format_help, sub.parse_args

        def format_help(ctx, formatter, _sub=sub, _original=original_format_help):  # noqa: ANN001, ANN202
            with _one_name_each(_sub.params):
                return _original(ctx, formatter)

        def parse_args(ctx, args, _sub=sub, _original=original_parse_args):  # noqa: ANN001, ANN202
            try:
                return _original(ctx, args)
            except NoSuchOption as error:
                matches = initials_match(error.option_name, _sub.params)
                if not matches:
                    raise
                message = f"No such option: {error.option_name}. Did you mean {' or '.join(matches)}?"
                raise NoSuchOption(error.option_name, message=message, ctx=ctx) from None

        sub.format_help, sub.parse_args = format_help, parse_args
    return command
