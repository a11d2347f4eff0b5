"""A rich progress bar that library code can drive without knowing about consoles or the CLI."""

from __future__ import annotations

import warnings

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressReporter:
    """Counts units of work ("total" grows as series are opened, "done" advances the bar).

    With no console nothing is drawn and warnings go through the `warnings` module, so the library
    stays quiet when scripted. The CLI passes a console created at call time (stderr), which keeps
    CliRunner's captured streams intact.
    """

    def __init__(self, console: Console | None, description: str = "working", unit: str = "slices") -> None:
        self.console = console
        self.total = 0
        self._progress = None
        if console is not None:
            self._progress = Progress(
                TextColumn(f"{description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(unit),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._task = self._progress.add_task(description, total=None)

    def __enter__(self) -> ProgressReporter:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, kind: str, count: int) -> None:
        """kind "total": `count` more units to do; kind "done": `count` units finished."""
        if kind == "total":
            self.total += count
            if self._progress is not None:
                self._progress.update(self._task, total=self.total)
        elif self._progress is not None:
            self._progress.advance(self._task, count)

    def warn(self, message: str) -> None:
        if self.console is None:
            warnings.warn(message, stacklevel=2)
        else:
            self.console.print(f"warning: {message}", markup=False, highlight=False)
