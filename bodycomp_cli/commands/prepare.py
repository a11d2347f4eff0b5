"""prepare-slices and prepare-seg (stubs until the foundation issue lands)."""

from __future__ import annotations

import typer

from bodycomp_cli.commands.common import not_available_yet, report_user_errors


def register(app: typer.Typer) -> None:
    @app.command("prepare-slices")
    @report_user_errors
    def prepare_slices() -> None:
        """Turn CT series into the slice-selection training layout (images/<split>/*.png, meta/<split>.csv)."""
        not_available_yet("prepare-slices", "foundation issue")

    @app.command("prepare-seg")
    @report_user_errors
    def prepare_seg() -> None:
        """Build the segmentation training arrays (train/val images and masks .npy)."""
        not_available_yet("prepare-seg", "foundation issue")
