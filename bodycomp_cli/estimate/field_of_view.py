"""Does a tissue reach the edge of what was reconstructed? Then the body was cut off and its area is low.

The field of view is every pixel above PADDING_BELOW_HU: scanners fill what lies outside the
reconstruction circle with a value far below air (-2000, -3024 or the type's minimum), while air
inside the circle is about -1000 HU. Some fill it with -1024 instead, which air can also read; that
fill is recognised as one constant value over everything outside the inscribed circle (noisy air is
never constant). A tissue touches the edge when one of its pixels lies on the image border or next to
a pixel outside the field of view.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

PADDING_BELOW_HU = -1500.0


def field_of_view(hu_slice: np.ndarray) -> np.ndarray:
    """H x W bool: the pixels the scanner reconstructed (not the fill outside the reconstruction circle)."""
    hu_slice = np.asarray(hu_slice)
    inside = hu_slice > PADDING_BELOW_HU
    rows, cols = hu_slice.shape
    yy, xx = np.ogrid[:rows, :cols]
    outside_circle = np.hypot(yy - (rows - 1) / 2, xx - (cols - 1) / 2) > min(rows, cols) / 2
    if outside_circle.any():
        fill = hu_slice[outside_circle]
        # One value over all the corners, rare inside the disc: a fill, not air that happens to be flat.
        if fill.min() == fill.max() and np.mean(hu_slice[~outside_circle] == fill[0]) < 0.5:
            inside &= hu_slice != fill[0]
    return inside


def edge_zone(hu_slice: np.ndarray) -> np.ndarray:
    """H x W bool: outside the field of view, on the image border, or 4-adjacent to outside."""
    # Eroding with a False border keeps exactly the reconstructed pixels away from border and fill.
    return ~ndimage.binary_erosion(field_of_view(hu_slice), border_value=0)


def tissues_touching_edge(hu: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, bool]:
    """Per tissue (classes[1:]), True when it reaches the field of view's edge on any slice given.

    hu and labels are one slice (H x W) or several (N x H x W).
    Example: tissues_touching_edge(hu_slice, mask, ["background", "muscle"])  # {"muscle": False}
    """
    hu, labels = np.asarray(hu), np.asarray(labels)
    if hu.ndim == 2:
        hu, labels = hu[None], labels[None]
    touching = dict.fromkeys(classes[1:], False)
    for hu_slice, label_slice in zip(hu, labels, strict=True):
        present = np.unique(label_slice[edge_zone(hu_slice)])
        for label in present[(present > 0) & (present < len(classes))]:
            touching[classes[int(label)]] = True
    return touching
