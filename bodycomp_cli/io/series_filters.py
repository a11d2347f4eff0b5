"""Which CT series can be measured: the filters a PACS export needs, each returning a one-line reason.

The DICOM filters read headers only (no pixels), so a cohort's localizers, reformats and dual-energy
maps are skipped before anything is decoded. The slice-count and spacing checks serve every input
(npz and NIfTI too) and are used by estimate's QC.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from bodycomp_cli.io.dicom_series import DicomSeries

# |slice normal . z| below this is not an axial acquisition (about 37 degrees of tilt).
MIN_AXIAL_COSINE = 0.8
# ImageType values of images that are not a primary reconstruction in HU. DERIVED covers reformats,
# MIPs and most processed series; the dual-energy words are the vendors' names for material maps and
# virtual monoenergetic images (GE "GSI MD"/"GSI MONO", Philips "MonoE"/"VMI", Siemens "MONOENERGETIC",
# iodine, virtual non-contrast and effective-Z maps): their pixels are not the scanner's HU.
REFUSED_IMAGE_TYPES = {
    "LOCALIZER": "a localizer (scout)",
    "DERIVED": "a derived series (reformat, MIP or processed)",
    "SECONDARY": "a secondary capture",
}
DUAL_ENERGY_WORDS = ("GSI", "MONOE", "MONOENERGETIC", "VMI", "MATERIAL", "IODINE", "VNC", "ZEFF", "Z EFFECTIVE")


def image_type_failure(image_type: Sequence[str]) -> str | None:
    """Why an ImageType marks a series that is not a primary CT reconstruction, or None."""
    values = [str(value).strip().upper() for value in image_type]
    shown = "\\".join(values)
    for word, meaning in REFUSED_IMAGE_TYPES.items():
        if word in values:
            return f"ImageType {shown} is {meaning}"
    for value in values:
        if any(word in value for word in DUAL_ENERGY_WORDS):
            return f"ImageType {shown} is a dual-energy material or monoenergetic map"
    return None


def axial_failure(orientation: Sequence[float]) -> str | None:
    """Why ImageOrientationPatient is not axial (slice normal tilted more than about 37 degrees), or None."""
    vector = np.asarray(orientation, dtype=np.float64)
    normal = np.cross(vector[:3], vector[3:])
    cosine = abs(normal[2]) / max(float(np.linalg.norm(normal)), 1e-12)
    if cosine < MIN_AXIAL_COSINE:
        tilt = np.degrees(np.arccos(min(cosine, 1.0)))
        return f"not an axial series (slices tilted {tilt:.0f} degrees from axial)"
    return None


def slice_count_failure(n_slices: int, min_slices: int) -> str | None:
    if n_slices < min_slices:
        return f"{n_slices} slice{'' if n_slices == 1 else 's'}, fewer than the minimum {min_slices}"
    return None


def z_spacing_failure(z_mm: np.ndarray, tolerance_mm: float) -> str | None:
    """Why slice positions (ascending) are not evenly spaced: a repeat, a gap or a mixed series; or None."""
    steps = np.diff(np.asarray(z_mm, dtype=np.float64))
    if steps.size == 0:
        return None
    if np.any(steps <= 0):
        return "two slices share a z position (duplicate or overlapping slices)"
    worst = float(np.max(np.abs(steps - np.median(steps))))
    if worst > tolerance_mm:
        return (
            f"z spacing is not uniform: steps range {steps.min():.3g}-{steps.max():.3g} mm "
            f"(tolerance {tolerance_mm:g} mm)"
        )
    return None


def kind_failure(series: DicomSeries) -> str | None:
    """Why a DICOM series is not an axial primary CT reconstruction (modality, ImageType, orientation)."""
    first = series.slices[0]
    if first.modality.upper() != "CT":
        return f"modality is {first.modality or 'missing'}, not CT"
    reason = image_type_failure(first.image_type)
    if reason is None and first.orientation is not None:
        reason = axial_failure(first.orientation)
    return reason


def header_failure(series: DicomSeries, min_slices: int, spacing_tolerance_mm: float, min_matrix: int) -> str | None:
    """The first filter a DICOM series fails, from its headers alone, or None when it may be read.

    Order: modality, ImageType, axial, how it was grouped (split/refused), slice count, spacing, size.
    """
    reason = kind_failure(series) or series.problem
    if reason is None:
        reason = slice_count_failure(len(series.slices), min_slices)
    if reason is None:
        reason = z_spacing_failure(np.sort(series.slice_positions_mm()), spacing_tolerance_mm)
    if reason is None:
        rows, columns = series.slices[0].rows, series.slices[0].columns
        if min(rows, columns) < min_matrix:
            reason = f"in-plane size {rows} x {columns} is smaller than {min_matrix} x {min_matrix}"
    return reason
