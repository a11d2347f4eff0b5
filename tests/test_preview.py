"""Preview PNGs: the legend gives each tissue's area and mean HU on the slice shown."""

from __future__ import annotations

import math

from bodycomp_cli.estimate.preview import _tissue_label


def test_preview_legend_names_area_and_mean_hu():
    assert _tissue_label("muscle", {"area_cm2": 152.34, "mean_hu": 38.4}) == "muscle: 152.3 cm², mean 38 HU"
    # No pixel spacing: no area, rather than a wrong one; an absent tissue says so.
    assert _tissue_label("visceral_fat", {"area_cm2": math.nan, "mean_hu": -90.0}) == "visceral fat: mean -90 HU"
    assert _tissue_label("muscle", {"area_cm2": math.nan, "mean_hu": math.nan}) == "muscle: none found"
