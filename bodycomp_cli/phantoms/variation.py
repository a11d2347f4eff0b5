"""What varies between phantom series: body build, fat distribution, muscle, scan geometry, noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bodycomp_cli.phantoms.anatomy import Spine, vertebra_index
from bodycomp_cli.phantoms.variants import Variants

ANATOMIES = ("realistic", "classic")
# Intermuscular fat (IMAT) as a share of the muscle compartment's interior: a design choice (not fitted to
# a cohort) that gives IMAT areas of a few cm2 at L3, small beside the muscle, as on adult CT.
IMAT_FRACTION_RANGE = (0.01, 0.08)


@dataclass(frozen=True)
class Build:
    """How a body build is drawn. The realistic builds (one per sex) are tuned so that the muscle, SAT and
    VAT areas at L3 over a generated cohort match published adult values (reference.py;
    tests/test_phantom_reference.py); the classic one is the sexless build of the phantoms before issue 24."""

    scale: tuple[float, float]  # uniform: body height factor
    chest_width: tuple[float, float]  # uniform (mm): semi-axis of the chest's muscle wall
    bulk: tuple[str, float, float]  # muscle bulk: ("normal", mean, SD) or ("uniform", low, high)
    sat_mm: tuple[str, float, float]  # flank SAT thickness: ("lognormal", median, log SD) or ("uniform", ...)
    gynoid: tuple[float, float]  # uniform: share of SAT over the hips
    vat_beta: tuple[float, float]  # beta: amount of visceral fat


BUILD = {
    "M": Build((0.95, 1.1), (135.0, 165.0), ("normal", 0.98, 0.13), ("lognormal", 14.0, 0.45), (0.0, 0.5), (2.5, 2.0)),
    "F": Build((0.88, 1.02), (120.0, 148.0), ("normal", 0.7, 0.08), ("lognormal", 19.0, 0.45), (0.4, 1.0), (1.4, 3.2)),
    "": Build((0.9, 1.1), (125.0, 160.0), ("uniform", 0.75, 1.25), ("uniform", 5.0, 35.0), (0.0, 1.0), (2.0, 2.0)),
}


def _draw(rng: np.random.Generator, spec: tuple[str, float, float], low: float, high: float) -> float:
    kind, a, b = spec
    if kind == "uniform":
        return float(rng.uniform(a, b))
    value = rng.normal(a, b) if kind == "normal" else a * np.exp(rng.normal(0.0, b))
    return float(np.clip(value, low, high))


@dataclass(frozen=True)
class SeriesParams:
    spine: Spine
    sex: str  # "M" or "F": sets the body build, muscle and fat distributions (see reference.py); "" classic
    size: int  # in-plane pixels (square)
    pixel_spacing_mm: float  # square pixels, FOV / size
    slice_spacing_mm: float
    v_top: float  # vertebral coordinate of the first (most superior) slice
    v_bottom: float  # ... and of the last
    # Body build (mm, semi-axes of the muscle wall's outer surface)
    chest_width: float
    chest_depth: float
    abdomen_width: float
    abdomen_depth: float
    pelvis_width: float
    pelvis_depth: float
    sat_mm: float  # subcutaneous fat thickness at the flank
    android: float  # 0-1: share of SAT over the belly (male-like)
    gynoid: float  # 0-1: share of SAT over the hips (female-like)
    vat: float  # 0-1: amount of visceral fat between the bowel loops
    muscle_bulk: float  # 0.7-1.3
    muscle_hu: float
    fat_hu: float
    bone_hu: float  # cancellous bone
    organ_hu: float  # liver; the other organs are set from it
    contrast: bool  # contrast-enhanced vessels and kidneys
    noise_sd: float
    organ_shift: float  # vertebrae; moves the organs up or down against the spine
    diaphragm_shift: float
    wobble: tuple[tuple[float, float], ...]  # body outline harmonics (amplitude, phase), k = 2, 3, 4
    texture_seed: int
    # Intermuscular fat: the share of the muscle compartment's interior that is fat (drawn last, so that
    # adding it left every earlier draw, and so every earlier phantom, unchanged).
    imat_fraction: float = 0.0
    variants: Variants = Variants()  # transitional vertebrae, arms, metal, ... (variants.py)
    anatomy: str = "realistic"  # or "classic": the thick muscle ring and sparse bowel of before issue 24


def sample_series(
    rng: np.random.Generator,
    size: int,
    coverage: str = "full",
    variants: Variants | None = None,
    anatomy: str = "realistic",
) -> SeriesParams:
    """Draw one series' parameters. coverage: "full", "no_t5" (starts below T5), "no_l5" (ends above L5),
    "chest_only" (ends above L3) or "pelvis_only" (starts below L3); variants' coverage, when given, wins.
    Every coverage takes the same draws, so the other parameters do not depend on it. anatomy "classic"
    draws exactly what the phantoms drew before issue 24 (no sex)."""
    variants = variants or Variants(coverage=coverage)
    coverage = variants.coverage
    sex = ("M" if rng.random() < 0.5 else "F") if anatomy == "realistic" else ""
    build = BUILD[sex]
    scale = rng.uniform(*build.scale)
    spine = Spine(z_t1=rng.uniform(-50.0, 150.0), scale=scale)
    l3 = vertebra_index("L3")
    if coverage == "no_t5":
        v_top = rng.uniform(vertebra_index("T5") + 0.6, vertebra_index("T8") - 0.6)
    elif coverage == "pelvis_only":  # from below the L3 vertebra (its lower end plate is at L3 + 0.5)
        v_top = rng.uniform(l3 + 0.7, l3 + 1.6)
    else:
        v_top = rng.uniform(-2.0, -1.0)
    if coverage == "no_l5":
        v_bottom = rng.uniform(l3 + 0.7, vertebra_index("L5") - 0.6)
    elif coverage == "chest_only":  # down to the upper abdomen, above the L3 vertebra
        v_bottom = rng.uniform(vertebra_index("T10"), l3 - 0.8)
    else:
        v_bottom = rng.uniform(19.0, 20.0)
    vat = rng.beta(*build.vat_beta)
    sat = _draw(rng, build.sat_mm, 3.0, 45.0)
    gynoid = rng.uniform(*build.gynoid)
    bulk = _draw(rng, build.bulk, 0.6, 1.4)
    chest_width = rng.uniform(*build.chest_width) * (0.9 + 0.1 * bulk)
    abdomen_width = chest_width * rng.uniform(0.88, 0.98) + 25.0 * vat
    pelvis_width = abdomen_width * rng.uniform(0.98, 1.05) + 15.0 * gynoid
    widest = max(chest_width, abdomen_width, pelvis_width) + 1.6 * sat * (1.0 + 0.6 * gynoid)
    if variants.arms_down:  # the field of view opens for the arms, up to the scanner's 500 mm
        widest += 2.0 * (variants.arm_gap_mm + variants.arm_radius_mm)
    # Real scans use 0.6-0.98 mm pixels at 512: a field of view of 300-500 mm that holds the body.
    margin = rng.uniform(1.08, 1.2)
    fov = float(np.clip(2.0 * widest * margin, 300.0, 500.0))
    if variants.fov_cut:  # 68-80 % of the widest outline: the flanks (and arms) leave the image
        fov = 2.0 * widest * (margin - 0.4)
    return SeriesParams(
        spine=spine,
        sex=sex,
        size=size,
        pixel_spacing_mm=fov / size,
        slice_spacing_mm=float(rng.choice([1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0])),
        v_top=float(v_top),
        v_bottom=float(v_bottom),
        chest_width=chest_width,
        chest_depth=chest_width * rng.uniform(0.68, 0.78),
        abdomen_width=abdomen_width,
        abdomen_depth=abdomen_width * rng.uniform(0.62, 0.72) + 20.0 * vat,
        pelvis_width=pelvis_width,
        pelvis_depth=pelvis_width * rng.uniform(0.6, 0.68),
        sat_mm=sat,
        android=1.0 - gynoid,
        gynoid=gynoid,
        vat=float(vat),
        muscle_bulk=bulk,
        muscle_hu=rng.uniform(25.0, 55.0),
        fat_hu=rng.uniform(-110.0, -85.0),
        bone_hu=rng.uniform(220.0, 380.0),
        organ_hu=rng.uniform(50.0, 65.0),
        contrast=bool(rng.random() < 0.5),
        noise_sd=rng.uniform(10.0, 25.0),
        organ_shift=rng.uniform(-0.25, 0.25),
        diaphragm_shift=rng.uniform(-0.3, 0.3),
        wobble=tuple((float(rng.uniform(0.0, 0.025)), float(rng.uniform(0, 2 * np.pi))) for _ in range(3)),
        texture_seed=int(rng.integers(0, 2**31)),
        imat_fraction=float(rng.uniform(*IMAT_FRACTION_RANGE)),
        variants=variants,
        anatomy=anatomy,
    )
