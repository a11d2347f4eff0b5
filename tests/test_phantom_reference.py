"""The phantoms' anatomy at L3: separate abdominal wall muscles, and tissue areas whose distributions over a
generated cohort match published adult values (bodycomp_cli/phantoms/reference.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import invoke
from scipy.ndimage import binary_dilation, label

from bodycomp_cli.phantoms import SeriesRenderer, series_params
from bodycomp_cli.phantoms import tissues as T
from bodycomp_cli.phantoms.reference import L3_REFERENCE, l3_cohort_areas

# 96 px is the smallest size whose pixels (3-5 mm) resolve the skin and the thin wall without biasing SAT.
SIZE, COHORT = 96, 240
# Stated tolerances. A mean or median within 10 % of the reference (its standard error at about 120
# series per sex is 2-4 %); an SD within 30 % of the reference SD.
CENTRE_TOLERANCE, SD_TOLERANCE = 0.10, 0.30


@pytest.fixture(scope="module")
def cohort() -> dict[str, dict[str, np.ndarray]]:
    return l3_cohort_areas(COHORT, seed=0, size=SIZE)


def test_both_sexes_are_drawn(cohort):
    men, women = len(cohort["M"]["muscle"]), len(cohort["F"]["muscle"])
    assert men + women == COHORT and min(men, women) > 0.4 * COHORT


@pytest.mark.parametrize("reference", L3_REFERENCE, ids=lambda r: r.tissue)
def test_l3_areas_match_the_published_reference(cohort, reference):
    for sex, centre, sd in (("M", reference.men, reference.men_sd), ("F", reference.women, reference.women_sd)):
        areas = cohort[sex][reference.tissue]
        measured = float(np.mean(areas) if reference.statistic == "mean" else np.median(areas))
        assert abs(measured - centre) <= CENTRE_TOLERANCE * centre, (sex, reference.tissue, measured, centre)
        if sd is not None:
            assert abs(float(np.std(areas)) - sd) <= SD_TOLERANCE * sd, (sex, reference.tissue, np.std(areas), sd)


def _runs(mask_row: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of True in a 1-D mask."""
    padded = np.concatenate([[False], mask_row, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2], strict=True))


@pytest.mark.parametrize("index", range(4))
def test_the_abdominal_wall_is_thin_and_split_at_the_midline(index):
    params = series_params(0, index, 256)
    renderer = SeriesRenderer(params)
    labels = renderer.render_slice(float(params.spine.z_of("L3"))).labels
    spacing = params.pixel_spacing_mm
    # Down the anterior midline: SAT, then no muscle (linea alba), then the cavity.
    midline = labels[:, int(np.argmin(np.abs(renderer.xs)))]
    front = midline[: int(np.argmin(np.abs(renderer.ys + 40.0)))]
    assert T.SUBCUTANEOUS_FAT in front and T.MUSCLE not in front
    # 30 mm to either side, in front of the cavity's centre: a rectus, 4-16 mm thick (10 mm at bulk 1).
    for side in (-30.0, 30.0):
        column = labels[: int(np.argmin(np.abs(renderer.ys + 40.0))), int(np.argmin(np.abs(renderer.xs - side)))]
        runs = [(a, b) for a, b in _runs(column == T.MUSCLE)]
        assert len(runs) == 1, runs
        thickness = (runs[0][1] - runs[0][0]) * spacing
        assert 4.0 <= thickness <= 16.0 * params.muscle_bulk + spacing, thickness
    # Across the flank at the body's centre row: the lateral wall (three layers together) 5-22 mm thick.
    row = labels[int(np.argmin(np.abs(renderer.ys))), :]
    first = _runs(row == T.MUSCLE)[0]
    assert 5.0 <= (first[1] - first[0]) * spacing <= 22.0 * params.muscle_bulk + spacing


def test_psoas_lies_apart_from_the_back_muscles_in_visceral_fat():
    for index in range(6):
        params = series_params(0, index, 256)
        renderer = SeriesRenderer(params)
        labels = renderer.render_slice(float(params.spine.z_of("L3"))).labels
        components, count = label(labels == T.MUSCLE)
        pixel_cm2 = params.pixel_spacing_mm**2 / 100.0
        for side in (-1.0, 1.0):
            # A muscle of its own beside the vertebral body (20-70 mm from the midline), not part of the
            # wall-and-back component, with visceral fat around it.
            near = (side * renderer.x > 20.0) & (side * renderer.x < 70.0) & (np.abs(renderer.y) < 60.0)
            own = [
                k for k in range(1, count + 1) if (components == k)[near].mean() > 0 and np.all(near[components == k])
            ]
            assert len(own) == 1, (index, side, own)
            psoas = components == own[0]
            assert 2.0 < psoas.sum() * pixel_cm2 < 15.0
            ring = binary_dilation(psoas, iterations=2) & ~psoas
            assert (labels[ring] == T.VISCERAL_FAT).mean() > 0.15


def test_classic_anatomy_keeps_the_muscle_ring(tmp_path):
    for index in range(3):
        params = series_params(0, index, 128, anatomy="classic")
        assert params.sex == "" and params.anatomy == "classic"
        renderer = SeriesRenderer(params)
        labels = renderer.render_slice(float(params.spine.z_of("L3"))).labels
        midline = labels[: int(np.argmin(np.abs(renderer.ys + 40.0))), int(np.argmin(np.abs(renderer.xs)))]
        assert T.MUSCLE in midline  # no linea alba: the ring runs across the midline
    out = tmp_path / "classic"
    args = ["phantoms", out, "--series", "1", "--size", "32", "--seg-slices", "1", "--workers", "1"]
    assert invoke([*args, "--anatomy", "classic"]).exit_code == 0
    assert json.loads((out / "phantoms.json").read_text())["series"][0]["anatomy"] == "classic"
