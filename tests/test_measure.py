"""Areas and HU statistics against masks computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bodycomp_cli.estimate.measure import measure_tissues

CLASSES = ["background", "muscle", "subcutaneous_fat", "visceral_fat"]


def test_area_and_hu_of_one_slice() -> None:
    hu = np.zeros((4, 5), dtype=np.int16)
    labels = np.zeros((4, 5), dtype=np.uint8)
    labels[0, :4] = 1  # four muscle pixels: 10, 20, 30, 40 HU
    hu[0, :4] = [10, 20, 30, 40]
    labels[3, 0] = 2  # one fat pixel at -100 HU
    hu[3, 0] = -100
    stats = measure_tissues(hu, labels, CLASSES, pixel_spacing=(0.5, 2.0))
    # 4 pixels x 0.5 mm x 2 mm = 4 mm^2 = 0.04 cm^2
    assert stats["muscle"]["area_cm2"] == pytest.approx(0.04)
    assert stats["muscle"]["mean_hu"] == pytest.approx(25.0)
    assert stats["muscle"]["median_hu"] == pytest.approx(25.0)
    assert stats["muscle"]["std_hu"] == pytest.approx(math.sqrt(125.0))  # population std of 10..40
    assert stats["muscle"]["iqr_hu"] == pytest.approx(32.5 - 17.5)
    assert stats["subcutaneous_fat"] == {
        "area_cm2": pytest.approx(0.01),
        "mean_hu": -100.0,
        "median_hu": -100.0,
        "std_hu": 0.0,
        "iqr_hu": 0.0,
    }
    # No visceral fat in the mask: zero area, no HU.
    assert stats["visceral_fat"]["area_cm2"] == 0.0
    assert math.isnan(stats["visceral_fat"]["mean_hu"])


def test_several_slices_average_area_and_pool_hu() -> None:
    hu = np.full((2, 10, 10), 50.0, dtype=np.float32)
    hu[1] = 70.0
    labels = np.zeros((2, 10, 10), dtype=np.uint8)
    labels[0, :2, :] = 1  # 20 px at 50 HU
    labels[1, :6, :] = 1  # 60 px at 70 HU
    muscle = measure_tissues(hu, labels, CLASSES[:2], pixel_spacing=(1.0, 1.0))["muscle"]
    assert muscle["area_cm2"] == pytest.approx((20 + 60) / 2 / 100)
    assert muscle["mean_hu"] == pytest.approx((20 * 50 + 60 * 70) / 80)  # pooled pixels, not mean of means
    assert muscle["median_hu"] == 70.0
    # 80 sorted values (20 x 50, then 60 x 70): p25 sits at position 0.25 x 79 = 19.75, between the
    # last 50 and the first 70, so 50 + 0.75 x 20 = 65; p75 (position 59.25) is 70.
    assert muscle["iqr_hu"] == pytest.approx(5.0)


def test_unknown_pixel_spacing_gives_no_area_but_keeps_hu() -> None:
    labels = np.ones((3, 3), dtype=np.uint8)
    muscle = measure_tissues(np.full((3, 3), 42), labels, CLASSES[:2], pixel_spacing=None)["muscle"]
    assert math.isnan(muscle["area_cm2"])
    assert muscle["mean_hu"] == 42.0


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        measure_tissues(np.zeros((3, 3)), np.zeros((3, 4), dtype=np.uint8), CLASSES, (1.0, 1.0))
