"""Does a tissue reach the edge of what was reconstructed? Then the body was cut off and its area is low.

The field of view is every pixel above PADDING_BELOW_HU: scanners fill what lies outside the
reconstruction circle with a value far below air (-2000, -3024 or the type's minimum), while air
inside the circle is about -1000 HU. A tissue touches the edge when one of its pixels lies on the
image border or next to a padding pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

PADDING_BELOW_HU = -1500.0


def field_of_view_edge(hu_slice: np.ndarray) -> np.ndarray:
    """H x W bool: the reconstructed pixels on the image border or beside the reconstruction circle."""
    inside = np.asarray(hu_slice) > PADDING_BELOW_HU
    # Eroding with a False border removes exactly the pixels on the border or 4-adjacent to padding.
    interior = ndimage.binary_erosion(inside, border_value=0)
    return inside & ~interior


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
        # A labelled padding pixel is outside the field of view: it counts as touching the edge.
        edge = field_of_view_edge(hu_slice) | (hu_slice <= PADDING_BELOW_HU)
        present = np.unique(label_slice[edge])
        for label in present[(present > 0) & (present < len(classes))]:
            touching[classes[int(label)]] = True
    return touching
