"""Published sarcopenia and myosteatosis cut-offs at L3, applied to a results row.

A flag is "1" (under the cut-off), "0" (not under it) or blank when an input it needs is missing; the
`*_note` column then says which. A missing input never gives "0".
"""

from __future__ import annotations

from collections.abc import Mapping

from bodycomp_cli.estimate.indices import number_or_none

CUTOFF_LEVEL = "L3"  # both papers' thresholds are for the L3 slice
CITATIONS = {
    "martin2013": "Martin L et al. Cancer cachexia in the age of obesity. J Clin Oncol 2013;31:1539-1547",
    "prado2008": (
        "Prado CMM et al. Prevalence and clinical implications of sarcopenic obesity. Lancet Oncol 2008;9:629-635"
    ),
    "none": "",
}
CUTOFF_CHOICES = tuple(CITATIONS)
CUTOFF_COLUMNS = (
    "cutoffs",
    "cutoffs_citation",
    "sarcopenia",
    "sarcopenia_note",
    "low_muscle_attenuation",
    "low_muscle_attenuation_note",
)


def _missing(needed: Mapping[str, object]) -> str:
    return ", ".join(name for name, value in needed.items() if value is None or value == "")


def sarcopenia(scheme: str, smi: float | None, sex: str, bmi: float | None) -> tuple[str, str]:
    """(flag, note). martin2013: SMI < 43 (men, BMI < 25), < 53 (men, BMI >= 25), < 41 (women, any BMI).
    prado2008: SMI <= 52.4 (men), <= 38.5 (women)."""
    if scheme == "none":
        return "", "no cut-offs chosen"
    needs_bmi = scheme == "martin2013" and sex == "M"
    missing = _missing({"SMI": smi, "sex": sex, **({"BMI": bmi} if needs_bmi else {})})
    if missing:
        return "", f"missing {missing}"
    assert smi is not None
    if scheme == "martin2013":
        if sex == "F":
            return str(int(smi < 41.0)), "women: SMI < 41"
        assert bmi is not None
        threshold = 43.0 if bmi < 25.0 else 53.0
        return str(int(smi < threshold)), f"men, BMI {'< 25' if bmi < 25.0 else '>= 25'}: SMI < {threshold:g}"
    threshold = 52.4 if sex == "M" else 38.5
    return str(int(smi <= threshold)), f"{'men' if sex == 'M' else 'women'}: SMI <= {threshold:g}"


def low_attenuation(scheme: str, muscle_hu: float | None, bmi: float | None) -> tuple[str, str]:
    """(flag, note). martin2013 only: muscle mean HU < 41 (BMI < 25), < 33 (BMI >= 25)."""
    if scheme != "martin2013":
        return "", "no attenuation cut-off in " + (scheme if scheme != "none" else "the chosen (none) scheme")
    missing = _missing({"muscle mean HU": muscle_hu, "BMI": bmi})
    if missing:
        return "", f"missing {missing}"
    assert muscle_hu is not None and bmi is not None
    threshold = 41.0 if bmi < 25.0 else 33.0
    return str(int(muscle_hu < threshold)), f"BMI {'< 25' if bmi < 25.0 else '>= 25'}: mean HU < {threshold:g}"


def cutoff_flags(scheme: str, row: Mapping[str, object], facts: Mapping[str, object]) -> dict[str, object]:
    """The CUTOFF_COLUMNS for one row, from its L3 SMI and muscle mean HU and the patient's sex and BMI."""
    if scheme not in CITATIONS:
        raise ValueError(f"unknown cut-offs {scheme!r}; choose one of {', '.join(CUTOFF_CHOICES)}")
    columns = {"cutoffs": scheme, "cutoffs_citation": CITATIONS[scheme]}
    if f"{CUTOFF_LEVEL}_muscle_area_cm2" not in row and scheme != "none":
        reason = f"{CUTOFF_LEVEL} is not among the measured levels (the cut-offs are for {CUTOFF_LEVEL})"
        blank = {"sarcopenia": "", "sarcopenia_note": reason}
        return columns | blank | {"low_muscle_attenuation": "", "low_muscle_attenuation_note": reason}
    smi = number_or_none(row.get(f"{CUTOFF_LEVEL}_smi_cm2_m2"))
    hu = number_or_none(row.get(f"{CUTOFF_LEVEL}_muscle_mean_hu"))
    bmi = number_or_none(facts.get("bmi_kg_m2"))
    flag, note = sarcopenia(scheme, smi, str(facts.get("sex") or ""), bmi)
    low, low_note = low_attenuation(scheme, hu, bmi)
    return columns | {
        "sarcopenia": flag,
        "sarcopenia_note": note,
        "low_muscle_attenuation": low,
        "low_muscle_attenuation_note": low_note,
    }
