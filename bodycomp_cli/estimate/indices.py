"""Body-composition indices from a level's areas and the patient's height: SMI and the fat indices."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

INDEX_FIELDS = ("smi_cm2_m2", "sat_index_cm2_m2", "vat_index_cm2_m2", "total_fat_index_cm2_m2", "vat_sat_ratio")


def number_or_none(value: object) -> float | None:
    """A cell as a float; None for a blank cell, None or NaN."""
    if value is None or value == "":
        return None
    value = float(value)  # type: ignore[arg-type]
    return None if math.isnan(value) else value


def level_indices(row: Mapping[str, object], level: str, height_m: float | None) -> dict[str, float | None]:
    """`{level}_smi_cm2_m2` = muscle area / height², SAT, VAT and total-fat (SAT + VAT) indices likewise,
    and `{level}_vat_sat_ratio` = VAT area / SAT area (needs no height; blank when SAT is 0).

    Any missing input leaves its index blank. Example: level_indices(row, "L3", 1.75)["L3_smi_cm2_m2"]
    """
    muscle = number_or_none(row.get(f"{level}_muscle_area_cm2"))
    sat = number_or_none(row.get(f"{level}_subcutaneous_fat_area_cm2"))
    vat = number_or_none(row.get(f"{level}_visceral_fat_area_cm2"))
    total = sat + vat if sat is not None and vat is not None else None
    square = height_m**2 if height_m else None

    def per_height(area: float | None) -> float | None:
        return area / square if area is not None and square else None

    return {
        f"{level}_smi_cm2_m2": per_height(muscle),
        f"{level}_sat_index_cm2_m2": per_height(sat),
        f"{level}_vat_index_cm2_m2": per_height(vat),
        f"{level}_total_fat_index_cm2_m2": per_height(total),
        f"{level}_vat_sat_ratio": vat / sat if vat is not None and sat else None,
    }


def index_columns(levels: Sequence[str]) -> list[str]:
    return [f"{level}_{name}" for level in levels for name in INDEX_FIELDS]
