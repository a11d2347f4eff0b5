"""phantoms and demo (stubs until the phantom issue lands)."""

from __future__ import annotations

import typer

from bodycomp_cli.commands.common import not_available_yet, report_user_errors


def register(app: typer.Typer) -> None:
    @app.command("phantoms")
    @report_user_errors
    def phantoms() -> None:
        """Write synthetic chest/abdomen/pelvis CT series with known levels and tissue labels."""
        not_available_yet("phantoms", "phantom issue")

    @app.command("demo")
    @report_user_errors
    def demo() -> None:
        """Run the whole pipeline on phantom data on the CPU and report Dice and L3 error."""
        not_available_yet("demo", "phantom issue")
