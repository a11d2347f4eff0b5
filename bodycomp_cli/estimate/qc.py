"""Quality control of a CT series before inference: the reasons a series is skipped, not guessed at."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bodycomp_cli.io.series_filters import slice_count_failure, z_spacing_failure

if TYPE_CHECKING:
    from bodycomp_cli.io.volumes import Volume

# Any body CT field of view holds air outside the patient (about -1000 HU) and soft tissue (around
# 0-100 HU). A series with no voxel below AIR_BELOW_HU is not in HU (a missing rescale, or a windowed
# export); one with nothing above TISSUE_ABOVE_HU holds no patient.
AIR_BELOW_HU = -500.0
TISSUE_ABOVE_HU = -200.0
# Beyond these no scanner writes HU (the DICOM CT range is about -1024..3071, extended scales reach
# about 30000 for metal).
HU_FLOOR, HU_CEILING = -3024.0, 32767.0


@dataclass(frozen=True)
class QcSettings:
    min_slices: int = 20  # fewer slices cannot show a level's neighbourhood
    spacing_tolerance_mm: float = 0.1  # largest allowed departure of a z step from the median step
    # DICOM only: smaller images are thumbnails, secondary captures or cropped reconstructions (body CT
    # is reconstructed at 512 x 512, sometimes 256 or 768-1024).
    min_matrix: int = 128


def qc_failure(volume: Volume, settings: QcSettings) -> str | None:
    """Why a series must be skipped (one line), or None when it passes.

    Example: reason = qc_failure(read_volume(path), QcSettings(min_slices=20))
    """
    if volume.modality is not None and volume.modality.upper() != "CT":
        return f"modality is {volume.modality}, not CT"
    reason = slice_count_failure(volume.hu.shape[0], settings.min_slices)
    reason = reason or z_spacing_failure(volume.z_mm, settings.spacing_tolerance_mm)
    return reason or _hu_failure(volume.hu)


def _hu_failure(hu: np.ndarray) -> str | None:
    if not np.all(np.isfinite(hu)):
        return "HU contains NaN or infinite values"
    low, high = float(hu.min()), float(hu.max())
    if low < HU_FLOOR or high > HU_CEILING:
        return f"HU range {low:g}..{high:g} is outside what a CT scanner writes"
    if low > AIR_BELOW_HU:
        return f"no air in the series (lowest value {low:g}): values do not look like HU"
    if high < TISSUE_ABOVE_HU:
        return f"no soft tissue in the series (highest value {high:g} HU)"
    return None
