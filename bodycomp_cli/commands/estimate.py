"""estimate and evaluate (stubs until the estimate issue lands)."""

from __future__ import annotations

import typer

from bodycomp_cli.commands.common import not_available_yet, report_user_errors


def register(app: typer.Typer) -> None:
    @app.command("estimate")
    @report_user_errors
    def estimate() -> None:
        """Find vertebral levels in CT series and measure muscle and fat areas and HU there."""
        not_available_yet("estimate", "estimate issue")

    @app.command("evaluate")
    @report_user_errors
    def evaluate() -> None:
        """Score a trained model on prepared data: Dice, area error, slice-selection error."""
        not_available_yet("evaluate", "estimate issue")
