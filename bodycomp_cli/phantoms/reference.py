"""Published tissue areas at L3 of healthy adults, which the phantom cohort's areas are tuned to match.

- Skeletal muscle area (mean, SD): 592 living kidney donors, L3 slice of the pre-donation CT; men
  168.0 +- 23.1 cm2, women 109.4 +- 13.8 cm2 (Korean J Transplant 2020;34(Suppl 1):S29,
  doi:10.4285/ATW2020.OP-1171, "Skeletal muscle mass effects on estimated glomerular filtration rate
  decrement after donor nephrectomy").
- Subcutaneous and visceral adipose tissue areas (medians): 1787 healthy adults, L3 CT, four cities of
  northern China; VAT men 120.9, women 67.2 cm2; SAT men 116.9, women 146.7 cm2 (Kong M et al. Front Nutr
  2022;9:871697). The abstract gives medians only, so the fat areas are checked by their medians.

Both cohorts are healthy East Asian adults with a mean BMI of about 23-26 kg/m2; a cohort of another
origin or BMI differs (Western cohorts have more SAT and VAT at the same muscle area).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from bodycomp_cli.phantoms.render import SeriesRenderer
from bodycomp_cli.phantoms.tissues import CLASS_NAMES
from bodycomp_cli.phantoms.writer import series_params


@dataclass(frozen=True)
class TissueReference:
    tissue: str  # a class name of tissues.CLASS_NAMES
    statistic: str  # "mean" (with sd) or "median"
    men: float  # cm2
    women: float
    men_sd: float | None = None
    women_sd: float | None = None


L3_REFERENCE = (
    TissueReference("muscle", "mean", 168.0, 109.4, 23.1, 13.8),
    TissueReference("subcutaneous_fat", "median", 116.9, 146.7),
    TissueReference("visceral_fat", "median", 120.9, 67.2),
)


def l3_cohort_areas(n_series: int, seed: int = 0, size: int = 96) -> dict[str, dict[str, np.ndarray]]:
    """Tissue areas (cm2) at the centre of L3 of n_series default phantoms, by sex then tissue. Only the L3
    slice is rendered, so a cohort of hundreds takes seconds at 96 px."""
    areas: dict[str, dict[str, list[float]]] = {"M": {}, "F": {}}
    for index in range(n_series):
        params = series_params(seed, index, size)
        labels = SeriesRenderer(params).render_slice(float(params.spine.z_of("L3"))).labels
        pixel_cm2 = params.pixel_spacing_mm**2 / 100.0
        for value, tissue in enumerate(CLASS_NAMES[1:], start=1):
            areas[params.sex].setdefault(tissue, []).append(float((labels == value).sum()) * pixel_cm2)
    return {sex: {t: np.array(v) for t, v in by_tissue.items()} for sex, by_tissue in areas.items()}


def comparison_table(areas: dict[str, dict[str, np.ndarray]]) -> str:
    """A markdown table of the cohort's statistic next to the reference's, per tissue and sex."""
    lines = ["| tissue | sex | series | phantoms | reference |", "|---|---|---|---|---|"]
    for ref in L3_REFERENCE:
        for sex, centre, sd in (("M", ref.men, ref.men_sd), ("F", ref.women, ref.women_sd)):
            values = areas[sex][ref.tissue]
            if ref.statistic == "mean":
                mine = f"mean {values.mean():.1f} (SD {values.std():.1f})"
                theirs = f"mean {centre:.1f} (SD {sd:.1f})"
            else:
                mine, theirs = f"median {np.median(values):.1f}", f"median {centre:.1f}"
            lines.append(f"| {ref.tissue} | {sex} | {len(values)} | {mine} | {theirs} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="L3 tissue areas of a phantom cohort against the reference.")
    parser.add_argument("--series", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    print(comparison_table(l3_cohort_areas(args.series, args.seed, args.size)))
