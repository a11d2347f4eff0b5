"""What every command shares: the exit-2 boundary for user errors, consoles and common options."""

from __future__ import annotations

import functools
import inspect
import sys
import warnings
from collections.abc import Callable
from dataclasses import fields
from typing import Annotated, Any, TypeVar, get_type_hints

import typer
from rich.console import Console

from bodycomp_cli.errors import BodycompError, BodycompWarning

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable)


def computed_default(panel: str) -> dict[str, Any]:
    """typer.Option settings for a default that is computed or read from the data: the help text states it
    (as `\\[default: ...]`), so Typer must not print the placeholder default (None) too."""
    return {"show_default": False, "rich_help_panel": panel}


# The rich help panels that group a long command's options (typer.Option(rich_help_panel=...)).
DATA_PANEL, MODEL_PANEL, OPTIMISATION_PANEL = "Data", "Model", "Optimisation"
DEVICES_PANEL, ORIGINAL_PANEL = "Devices", "Original toolkit (its networks and options)"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    if issubclass(category, BodycompWarning):
        err_console.print(f"warning: {message}", markup=False, highlight=False)
    else:
        warnings._showwarnmsg_impl(warnings.WarningMessage(message, category, filename, lineno, file, line))


def report_user_errors(func: F) -> F:
    """Turn a BodycompError into one line on stderr and exit code 2, with no traceback.

    Ctrl-C becomes exit 130 (the shell's convention) without a traceback either, and one line: the stage's
    own message (how to resume) where it gives one, else `interrupted`.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return func(*args, **kwargs)
        except BodycompError as error:
            message = " ".join(str(error).split("\n"))
            err_console.print(f"error: {message}", markup=False, highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as interrupt:  # its message, where a stage gives one, says how to resume
            err_console.print(str(interrupt) or "interrupted", markup=False, highlight=False)
            sys.stderr.flush()
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def set_malloc_policy(low_memory: bool = False) -> None:
    """malloc's process-wide setting, made at the CLI entry and never in the library (engine/memory.py):
    --low-memory returns freed buffers to the OS at once; every other run keeps them for reuse, which saves the
    CPU a page fault per page of every activation (about 2x for densenet121 inference on the CPU)."""
    from bodycomp_cli.engine.memory import keep_freed_memory, return_freed_buffers_to_os

    if low_memory:
        return_freed_buffers_to_os()
    else:
        keep_freed_memory()


# `-L T5 T8 T10 L3` (space-separated after one flag, as in the original) is made possible by cli.py,
# which swaps every option named `levels` for a greedy one; repeated `-L` works as well.
def levels_option(default: str) -> Any:
    """The -L option, with the words for this command's DEFAULT (its levels when -L is not given)."""
    return Annotated[
        list[str] | None,
        typer.Option(
            "-L",
            "--levels",
            help="Vertebral levels, space-separated after one flag (-L T5 T8 T10 L3) or repeated. "
            f"\\[default: {default}]",
            show_default=False,
        ),
    ]


# Training and inference choose devices the same way (engine/devices.py), so they share one -g option.
GpusOption = Annotated[
    int | None,
    typer.Option(
        "-g",
        "--gpus",
        help="GPUs: 0 = CPU, 1 = cuda:0, N > 1 = DataParallel. \\[default: 1 if CUDA else 0]",
        **computed_default(DEVICES_PANEL),
    ),
]
# One AMP policy for training and inference (core/amp.py), passed down as it is: None leaves the choice to it.
AmpOption = Annotated[
    bool | None,
    typer.Option(
        "--amp/--no-amp",
        help="Mixed precision: bf16 autocast on GPUs from Ampere on, else fp16 (with a GradScaler in training); "
        "--amp also on CPUs with bf16 instructions (AVX512-BF16, AMX); --no-amp: full precision everywhere. "
        "\\[default: on CUDA, off on the CPU]",
        **computed_default(DEVICES_PANEL),
    ),
]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing output folder (only after success).")
]


def option_group(name: str, group: type, **defaults: Any) -> Callable[[F], F]:
    """Decorate a command with a keyword-only parameter NAME: Typer shows the fields of GROUP (a dataclass of
    Annotated options) in its place, and the command gets them as one GROUP. DEFAULTS: this command's own defaults
    for some fields. Example: @option_group("train", TrainOptions, learning_rate=1e-4)"""
    annotations = get_type_hints(group, include_extras=True)  # the Annotated options, not their names
    options = [
        inspect.Parameter(
            field.name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=annotations[field.name],
            default=defaults.get(field.name, field.default),
        )
        for field in fields(group)
    ]

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        if signature.parameters[name].kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"{command.__name__}: {name} must be a keyword-only parameter")

        @functools.wraps(command)
        def with_group(**values: Any) -> None:
            grouped = group(**{field.name: values.pop(field.name) for field in fields(group)})
            command(**values, **{name: grouped})

        parameters = []
        for parameter in signature.parameters.values():
            parameters += options if parameter.name == name else [parameter]
        with_group.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        return with_group  # type: ignore[return-value]

    return decorate
