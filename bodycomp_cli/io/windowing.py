"""HU windowing shared by every command that makes an 8-bit image or a model input."""

from __future__ import annotations

import numpy as np

DEFAULT_WINDOW_LEVEL = 40.0
DEFAULT_WINDOW_WIDTH = 400.0


def window_hu(hu: np.ndarray, level: float = DEFAULT_WINDOW_LEVEL, width: float = DEFAULT_WINDOW_WIDTH) -> np.ndarray:
    """Window raw HU to uint8: clip(rint((HU - (level - width/2)) * 255 / width), 0, 255).

    The order (multiply by 255, then divide by width) is part of the contract: a precomputed
    255/400 = 0.6375 factor rounds 12 integer HU values differently. rint rounds half to even,
    so 40 HU -> 127.5 -> 128.
    """
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    scaled = (np.asarray(hu, dtype=np.float64) - (level - width / 2.0)) * 255.0 / width
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def window_hu_unit(
    hu: np.ndarray, level: float = DEFAULT_WINDOW_LEVEL, width: float = DEFAULT_WINDOW_WIDTH
) -> np.ndarray:
    """Window raw HU to float32 in [0, 1] (the model input); no 8-bit rounding on the way."""
    low = level - width / 2.0
    return np.clip((np.asarray(hu, dtype=np.float32) - low) / np.float32(width), 0.0, 1.0)
