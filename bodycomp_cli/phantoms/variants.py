"""Anatomy and scans that break level-finding and segmentation on real CT, as optional phantom variants.

Each variant is drawn per series with its own prevalence (`bodycomp phantoms --variants NAME=P,...`; all
are off by default, so the default phantoms and the demo's figures are unchanged). The draws come from a
stream of their own, so turning a variant on changes only the series that get it.

Level names under transitional anatomy count down from the top of the spine: T1 is the 8th vertebra from
C1, L1 the 20th, L3 the 22nd and L5 the 24th, whatever the ribs or the fusion with the sacrum. Counting
down from C2 (the atlantoaxial joint) is the only numbering that holds in segmentation variants (Tins BJ
et al. Incidence of numerical variants and transitional lumbosacral vertebrae on whole-spine MRI.
Insights Imaging 2016;7:199-203; Peckham ME et al. Localizing the L5 vertebra using nerve morphology on MRI,
AJNR 2017, doi:10.3174/ajnr.A5311, number from C2, L5 being the 24th presacral vertebra). So:

- ribs_11: T12 bears no rib (11 rib pairs); ribs_13: L1 bears a rib (13 pairs, a lumbar rib).
- sacralised_l5: L5 (the 24th vertebra) is fused into the sacrum: 23 mobile presacral vertebrae.
- lumbarised_s1: the 25th vertebra (S1, named L6 here) is a free lumbar-shaped vertebra: 25 presacral.

A reader who counts up from the sacrum, or down from the last rib, is one level off on these series; z_L3
in series.csv stays the 22nd vertebra's centre. `lumbar_count` in phantoms.json is what such a reader
sees: the mobile, rib-free vertebrae above the sacrum (4, 5 or 6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bodycomp_cli.errors import BodycompError

# Mutually exclusive choices share a group: one uniform draw per group picks at most one of them.
VARIANT_GROUPS: tuple[tuple[str, ...], ...] = (
    ("ribs_11", "ribs_13"),
    ("sacralised_l5", "lumbarised_s1"),
    ("arms_down",),
    ("spinal_metal", "hip_metal"),
    ("scoliosis",),
    ("fov_cut",),
    ("chest_only", "pelvis_only"),
)
VARIANT_NAMES = tuple(name for group in VARIANT_GROUPS for name in group)
STANDARD_RIB_PAIRS = 12
STANDARD_PRESACRAL = 24  # C1-C7, T1-T12, L1-L5


@dataclass(frozen=True)
class Variants:
    """The variants of one series (the truth written to phantoms.json)."""

    names: tuple[str, ...] = ()  # the variants drawn, in VARIANT_NAMES order
    rib_pairs: int = STANDARD_RIB_PAIRS  # rib-bearing vertebrae (11, 12, 13)
    presacral: int = STANDARD_PRESACRAL  # vertebrae above the sacrum, C1 included (23, 24, 25)
    arms_down: bool = False
    metal: str = "none"  # none, spinal (pedicle screws and rods at lumbar levels) or hip (prostheses)
    metal_levels: tuple[int, ...] = ()  # spinal: vertebra indices (0 = T1) holding screws
    arm_radius_mm: float = 0.0  # arms_down: semi-axis of each arm's cross-section
    arm_gap_mm: float = 0.0  # arms_down: gap between the arm and the trunk's skin
    scoliosis_deg: float = 0.0  # Cobb angle of a lumbar curve (positive: convex to the patient's left)
    fov_cut: bool = False  # the field of view is narrower than the body
    coverage: str = "full"  # full, no_t5, no_l5, chest_only (no L3), pelvis_only (no L3)

    @property
    def lumbar_count(self) -> int:
        """Mobile rib-free vertebrae above the sacrum: what counting between the last rib and the sacrum finds."""
        return self.presacral - 7 - self.rib_pairs

    @property
    def sacrum_index(self) -> int:
        """Vertebra index (0 = T1) of the first sacral segment: 17 on a standard spine."""
        return self.presacral - 7


def parse_prevalence(text: str | None) -> dict[str, float]:
    """`NAME=P,NAME=P` (P in 0-1; `all=P` sets every variant) -> {name: prevalence}; BodycompError if wrong."""
    prevalence = dict.fromkeys(VARIANT_NAMES, 0.0)
    if not text or not text.strip():
        return prevalence
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        name = name.strip()
        if not sep:
            raise BodycompError(f"--variants: {item.strip()!r} is not NAME=PREVALENCE (e.g. arms_down=0.1)")
        if name != "all" and name not in prevalence:
            raise BodycompError(f"--variants: unknown variant {name!r}; choose from all, {', '.join(VARIANT_NAMES)}")
        try:
            p = float(value)
        except ValueError:
            raise BodycompError(f"--variants: {name}={value.strip()!r} is not a number between 0 and 1") from None
        if not 0.0 <= p <= 1.0:
            raise BodycompError(f"--variants: {name}={p} is outside 0-1")
        for key in VARIANT_NAMES if name == "all" else (name,):
            prevalence[key] = p
    for group in VARIANT_GROUPS:
        if sum(prevalence[name] for name in group) > 1.0 + 1e-9:
            raise BodycompError(f"--variants: {' + '.join(group)} exceed 1 (a series gets at most one of them)")
    return prevalence


def draw_variants(rng: np.random.Generator, prevalence: dict[str, float] | None) -> tuple[str, ...]:
    """Names drawn for one series. Every group takes one uniform draw whatever the prevalences, so that the
    same seed gives a series the same draws under any --variants."""
    prevalence = prevalence or {}
    drawn = []
    for group in VARIANT_GROUPS:
        u = rng.random()
        edge = 0.0
        for name in group:
            edge += prevalence.get(name, 0.0)
            if u < edge:
                drawn.append(name)
                break
    return tuple(drawn)


def build_variants(names: tuple[str, ...], coverage: str, rng: np.random.Generator) -> Variants:
    """The variants' truth from the names drawn; rng gives their free parameters (fixed draws, as above)."""
    cobb, side, first_screw, screw_count = rng.uniform(15.0, 45.0), rng.choice([-1.0, 1.0]), rng.integers(13, 15), 3
    arm_radius, arm_gap = rng.uniform(38.0, 52.0), rng.uniform(0.0, 20.0)
    arms = "arms_down" in names
    return Variants(
        names=names,
        rib_pairs=11 if "ribs_11" in names else 13 if "ribs_13" in names else STANDARD_RIB_PAIRS,
        presacral=23 if "sacralised_l5" in names else 25 if "lumbarised_s1" in names else STANDARD_PRESACRAL,
        arms_down=arms,
        arm_radius_mm=float(arm_radius) if arms else 0.0,
        arm_gap_mm=float(arm_gap) if arms else 0.0,
        metal="spinal" if "spinal_metal" in names else "hip" if "hip_metal" in names else "none",
        metal_levels=tuple(range(int(first_screw), int(first_screw) + screw_count)) if "spinal_metal" in names else (),
        scoliosis_deg=float(side * cobb) if "scoliosis" in names else 0.0,
        fov_cut="fov_cut" in names,
        coverage="chest_only" if "chest_only" in names else "pelvis_only" if "pelvis_only" in names else coverage,
    )
