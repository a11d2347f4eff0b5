"""Muscle quality by the standard HU ranges (LAMA, NAMA, IMAT) and the Alberta protocol's HU gating.

- LAMA, low-attenuation muscle: muscle-labelled pixels of -29..29 HU; NAMA, normal-attenuation muscle:
  30..150 HU (Aubrey J et al. Acta Physiol 2014;210:489-497; Goodpaster BH et al. J Appl Physiol
  2000;89:104-110). Their share is of the muscle-labelled pixels within -29..150 HU (LAMA + NAMA).
- IMAT, intermuscular adipose tissue: pixels of the fat range -190..-30 HU inside the muscle compartment,
  i.e. labelled muscle by the model (Mitsiopoulos N et al. J Appl Physiol 1998;85:115-122, the same HU
  ranges). This is measured from the model's own mask, before any --hu-ranges gating.
- --hu-ranges alberta keeps only muscle pixels in -29..150 HU and fat pixels in -190..-30 HU before the
  areas and HU statistics are measured (Mourtzakis M et al. Appl Physiol Nutr Metab 2008;33:997-1006);
  `none` measures the mask as the model drew it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MUSCLE_HU = (-29.0, 150.0)
FAT_HU = (-190.0, -30.0)
LAMA_HU = (-29.0, 29.0)
NAMA_HU = (30.0, 150.0)
HU_RANGE_CHOICES = ("none", "alberta")
DEFAULT_HU_RANGES = "none"
QUALITY_FIELDS = ("lama_area_cm2", "nama_area_cm2", "lama_share", "nama_share", "imat_area_cm2")
# tissue class -> the HU range the Alberta protocol counts
ALBERTA_RANGES = {"muscle": MUSCLE_HU, "subcutaneous_fat": FAT_HU, "visceral_fat": FAT_HU}


def _within(hu: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    # HU are integers on CT; a rescaled float is rounded so that 29.6 counts as 30 (NAMA), not in a gap.
    rounded = np.round(hu)
    return (rounded >= bounds[0]) & (rounded <= bounds[1])


def gate_labels(hu: np.ndarray, labels: np.ndarray, classes: Sequence[str], hu_ranges: str) -> np.ndarray:
    """Labels with the pixels outside their tissue's HU range set to background (alberta), or unchanged."""
    if hu_ranges not in HU_RANGE_CHOICES:
        raise ValueError(f"unknown --hu-ranges {hu_ranges!r}; choose one of {', '.join(HU_RANGE_CHOICES)}")
    if hu_ranges == "none":
        return labels
    gated = np.array(labels, copy=True)
    for label, tissue in enumerate(classes):
        if tissue in ALBERTA_RANGES:
            gated[(labels == label) & ~_within(hu, ALBERTA_RANGES[tissue])] = 0
    return gated


def muscle_quality(
    hu: np.ndarray, labels: np.ndarray, classes: Sequence[str], pixel_spacing: tuple[float, float] | None
) -> dict[str, float]:
    """QUALITY_FIELDS over one slice or several (areas are the mean over slices, as measure_tissues).

    Blank (NaN) without a muscle class or a pixel spacing; shares blank when no pixel is LAMA or NAMA.
    """
    hu, labels = np.asarray(hu), np.asarray(labels)
    if hu.ndim == 2:
        hu, labels = hu[None], labels[None]
    if "muscle" not in classes:
        return dict.fromkeys(QUALITY_FIELDS, float("nan"))
    muscle = labels == list(classes).index("muscle")
    pixel_cm2 = pixel_spacing[0] * pixel_spacing[1] / 100.0 if pixel_spacing else float("nan")
    lama = int((muscle & _within(hu, LAMA_HU)).sum())
    nama = int((muscle & _within(hu, NAMA_HU)).sum())
    imat = int((muscle & _within(hu, FAT_HU)).sum())
    n = len(labels)
    return {
        "lama_area_cm2": lama / n * pixel_cm2,
        "nama_area_cm2": nama / n * pixel_cm2,
        "lama_share": lama / (lama + nama) if lama + nama else float("nan"),
        "nama_share": nama / (lama + nama) if lama + nama else float("nan"),
        "imat_area_cm2": imat / n * pixel_cm2,
    }
