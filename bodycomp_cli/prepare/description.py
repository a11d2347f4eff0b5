"""The dataset.json a prepare command leaves in its output folder (the contract is core/dataset.py)."""

from __future__ import annotations

from pathlib import Path

from bodycomp_cli import __version__
from bodycomp_cli.core.dataset import DATASET_FILE, DatasetDescription, check_window
from bodycomp_cli.core.runconfig import Window
from bodycomp_cli.io.atomic import atomic_write_text

WINDOW_OPTIONS = "--window-level/--window-width"


def checked_window(level: float, width: float) -> Window:
    """The --window-level/--window-width a prepare command was given, refused unless finite with width > 0."""
    window = Window(float(level), float(width))
    check_window(window, WINDOW_OPTIONS)
    return window


def write_dataset_description(
    folder: Path,
    kind: str,
    window: Window,
    counts: dict[str, dict[str, int]],
    manifest: Path,
    levels: list[str] | None = None,
    thoracic: bool | None = None,
) -> DatasetDescription:
    """Write folder/dataset.json (the output's temp folder, so it lands with the rest) and return what it says."""
    description = DatasetDescription(
        kind=kind,
        window=window,
        levels=levels,
        counts=counts,
        source_manifest=str(manifest),
        bodycomp_version=__version__,
        thoracic=thoracic,
    )
    atomic_write_text(Path(folder) / DATASET_FILE, description.to_json())
    return description
