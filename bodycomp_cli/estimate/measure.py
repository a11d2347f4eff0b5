"""Tissue areas and HU statistics under a segmentation mask."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TISSUES = ("muscle", "subcutaneous_fat", "visceral_fat")
STATISTICS = ("area_cm2", "mean_hu", "median_hu", "std_hu", "iqr_hu")


def measure_tissues(
    hu: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    pixel_spacing: tuple[float, float] | None,
) -> dict[str, dict[str, float]]:
    """Area and HU statistics per tissue over one slice (H x W) or several (N x H x W).

    `classes` names the labels in order, background first. With several slices the area is the mean
    over slices and the HU statistics pool every pixel. Without a pixel spacing the area is NaN; an
    absent tissue has area 0 and NaN HU statistics. std is the population one (ddof 0); iqr is p75 - p25.

    Example: measure_tissues(hu_slice, mask, ["background", "muscle"], (0.8, 0.8))["muscle"]["area_cm2"]
    """
    hu = np.asarray(hu)
    labels = np.asarray(labels)
    if hu.shape != labels.shape:
        raise ValueError(f"HU {hu.shape} and labels {labels.shape} differ in shape")
    if hu.ndim == 2:
        hu, labels = hu[None], labels[None]
    # cm^2 per pixel: row mm x column mm / 100.
    pixel_cm2 = pixel_spacing[0] * pixel_spacing[1] / 100.0 if pixel_spacing else float("nan")
    results: dict[str, dict[str, float]] = {}
    for label, tissue in enumerate(classes):
        if label == 0:
            continue
        inside = labels == label
        values = hu[inside].astype(np.float64)
        area = inside.sum() / len(labels) * pixel_cm2
        if values.size:
            p25, p50, p75 = np.percentile(values, [25, 50, 75])
            stats = (float(values.mean()), float(p50), float(values.std()), float(p75 - p25))
        else:
            stats = (float("nan"),) * 4
        results[tissue] = dict(zip(STATISTICS, (float(area), *stats), strict=True))
    return results
