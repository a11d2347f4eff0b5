"""Arrays from .npy and 8-bit PNG files, refusing a damaged or foreign file with one line that names it.

numpy, Pillow and imageio raise a dozen exception types (and EOFError, which click would turn into a bare
"Aborted!") for truncated or corrupt files; every reader of these formats goes through here instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from bodycomp_cli.errors import BodycompError, reason


def read_npy(path: Path, mmap_mode: Literal["r"] | None = None) -> np.ndarray:
    """The array of an .npy file (never a pickle); memory-mapped with mmap_mode="r"."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except Exception as error:  # ValueError, OSError, EOFError, UnpicklingError... for a damaged file
        raise BodycompError(f"{path}: not a readable .npy array ({reason(error)})") from None


def read_png(path: Path, verify: bool = True) -> tuple[np.ndarray, str]:
    """A PNG's pixels as an array, and its Pillow mode ("L" for 8-bit grayscale).

    verify=True first checks every chunk's CRC and the closing IEND chunk (Pillow decodes some truncated files
    silently); readers in a training loop, whose files were verified up front, skip it.
    """
    from PIL import Image

    try:
        if verify:
            with Image.open(path) as png:
                png.verify()
        with Image.open(path) as png:
            return np.asarray(png), png.mode
    except Exception as error:  # Pillow raises many types for corrupt files
        raise BodycompError(f"{path}: corrupt or truncated PNG ({reason(error)})") from None


def read_gray8_png(path: Path) -> np.ndarray:
    """The H x W uint8 pixels of an 8-bit grayscale PNG; any other mode or a damaged file is refused."""
    pixels, mode = read_png(path)
    if mode != "L":
        raise BodycompError(f"{path}: PNG is not 8-bit grayscale (mode {mode}, shape {pixels.shape})")
    return pixels
