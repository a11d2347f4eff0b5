"""train-seg and train-select (stubs until the engine issue lands)."""

from __future__ import annotations

import typer

from bodycomp_cli.commands.common import not_available_yet, report_user_errors


def register(app: typer.Typer) -> None:
    @app.command("train-seg")
    @report_user_errors
    def train_seg() -> None:
        """Train the 2D segmentation model (muscle, subcutaneous fat, visceral fat)."""
        not_available_yet("train-seg", "engine issue")

    @app.command("train-select")
    @report_user_errors
    def train_select() -> None:
        """Train the slice-selection model (z-offset from vertebral levels)."""
        not_available_yet("train-select", "engine issue")
