"""Tissue overlays: a slice at the soft-tissue window with each tissue blended in its colour."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bodycomp_cli.core.preprocess import window_hu

# One colour per tissue, readable over a grey CT and for the common colour-vision deficiencies.
TISSUE_COLOURS = {
    "muscle": (0.90, 0.25, 0.20),
    "subcutaneous_fat": (1.00, 0.80, 0.10),
    "visceral_fat": (0.15, 0.75, 0.90),
}
FALLBACK_COLOURS = [(0.6, 0.3, 0.9), (0.3, 0.9, 0.4), (0.9, 0.5, 0.9)]
OVERLAY_ALPHA = 0.45


def overlay_rgb(hu_slice: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """H x W x 3 float image: the slice at the soft-tissue window, tissues blended in their colours."""
    grey = window_hu(hu_slice).astype(np.float32) / 255.0
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for label, tissue in enumerate(classes):
        if label == 0:
            continue
        colour = np.array(tissue_colour(tissue, label), dtype=np.float32)
        inside = labels == label
        rgb[inside] = (1 - OVERLAY_ALPHA) * rgb[inside] + OVERLAY_ALPHA * colour
    return rgb


def tissue_colour(tissue: str, label: int) -> tuple[float, float, float]:
    return TISSUE_COLOURS.get(tissue, FALLBACK_COLOURS[(label - 1) % len(FALLBACK_COLOURS)])
