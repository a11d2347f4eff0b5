"""Metal on a slice: implants (pedicle screws and rods, prostheses) and their streaks.

Steel and titanium reconstruct far above any tissue: cortical bone stays below 2000 HU (1839 at most on the real
chest series of ../shared/realct), so 2500 HU over 10 mm² is metal (a pedicle screw of 5.5-7.5 mm has a
cross-section of 24-44 mm²). Its streaks shift the HU of the tissue around it, so tissue thresholds
and a network's labels go wrong there: the review flags such a slice (review.py), and the rib-cage test
(rib_cage.py) does not read one.
"""

from __future__ import annotations

import numpy as np

METAL_HU = 2500.0
METAL_AREA_MM2 = 10.0


def metal_area_mm2(hu: np.ndarray, pixel_spacing: tuple[float, float]) -> float:
    """The area of one axial slice (HU) at or above METAL_HU, in mm².

    Example: metal_area_mm2(volume.hu[k], volume.pixel_spacing)
    """
    return float(np.count_nonzero(np.asarray(hu) >= METAL_HU)) * pixel_spacing[0] * pixel_spacing[1]


def holds_metal(hu: np.ndarray, pixel_spacing: tuple[float, float]) -> bool:
    """Does this slice hold metal (METAL_AREA_MM2 or more at METAL_HU)?

    Example: holds_metal(volume.hu[k], volume.pixel_spacing)
    """
    return metal_area_mm2(hu, pixel_spacing) >= METAL_AREA_MM2
