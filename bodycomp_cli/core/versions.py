"""The versions a run folder, evaluation.json and results.json record, and `bodycomp --version` prints."""

from __future__ import annotations

import platform
from importlib import metadata

from bodycomp_cli import __version__

PACKAGES = ("bodycomp", "torch", "torchvision", "segmentation-models-pytorch", "timm", "numpy")


def versions() -> dict[str, str | None]:
    """{"python": ..., "bodycomp": ..., "torch": ..., ...}; None for a package that is not installed."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        if package == "bodycomp":  # the code that runs, even from a checkout that differs from the install
            found[package] = __version__
            continue
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found
