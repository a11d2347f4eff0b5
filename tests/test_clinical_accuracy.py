"""LAMA/NAMA and volumes against the phantoms' truth (issue 23, item 8), through benchmarks/clinical_accuracy.py
on two 64 px phantoms with 12 slices a volume."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from clinical_accuracy import l1_l5_volumes, l3_quality, phantom_accuracy  # noqa: E402

from bodycomp_cli.phantoms.render import SeriesRenderer  # noqa: E402
from bodycomp_cli.phantoms.writer import series_params  # noqa: E402


def test_truth_lama_nama_and_imat_make_the_whole_clean_muscle() -> None:
    """Clean phantom muscle is muscle HU or the phantom's intermuscular fat (its IMAT mask): LAMA + NAMA + IMAT is
    the whole muscle compartment."""
    renderer = SeriesRenderer(series_params(0, 0, 64))
    p = renderer.p
    rendered = renderer.render_slice(float(p.spine.z_of("L3")))
    quality = l3_quality(renderer, np.random.default_rng(0))
    pixel_cm2 = p.pixel_spacing_mm**2 / 100
    muscle_cm2 = (rendered.labels == 1).sum() * pixel_cm2
    truth, measured = quality["truth"], quality["measured"]
    assert truth["imat_area_cm2"] == rendered.imat.sum() * pixel_cm2 > 0
    assert truth["lama_area_cm2"] + truth["nama_area_cm2"] + truth["imat_area_cm2"] == pytest.approx(muscle_cm2)
    assert truth["lama_share"] + truth["nama_share"] == pytest.approx(1.0)
    # noise moves pixels between LAMA and NAMA and out of both (IMAT below -29, above 150), never adds any
    assert measured["lama_area_cm2"] + measured["nama_area_cm2"] <= muscle_cm2


def test_volumes_equal_the_truth_without_gating_and_lose_pixels_with_alberta() -> None:
    renderer = SeriesRenderer(series_params(0, 1, 64))
    volumes = l1_l5_volumes(renderer, np.random.default_rng(0), max_slices=12)
    assert volumes["slices"] == 12
    p = renderer.p
    span = float(p.spine.z_of("L1")) - float(p.spine.z_of("L5"))
    assert volumes["step_mm"] == pytest.approx(span / 11)
    for tissue, truth in volumes["truth"].items():
        assert truth > 0 and volumes["none"][tissue] == truth  # the truth mask, counted as drawn
        assert 0.95 * truth < volumes["alberta"][tissue] <= truth  # noisy pixels may fall out of the HU range
    # the muscle compartment holds intermuscular fat, which the muscle HU range leaves out
    assert volumes["alberta"]["muscle"] < volumes["truth"]["muscle"]


def test_accuracy_report_has_every_measure() -> None:
    result = phantom_accuracy(2, 64, seed=0, max_slices=6)
    assert result["volume_slices"] == 12
    assert set(result["l3_quality"]) == {"lama_area_cm2", "nama_area_cm2", "lama_share", "imat_area_cm2"}
    volumes = result["l1_l5_volumes"]
    assert volumes["muscle_cm3 (none)"]["mean_abs_error"] == 0.0
    assert volumes["muscle_cm3 (alberta)"]["mean_error"] < 0.0
    # LAMA gains what NAMA loses: the truth mask's muscle is the same, noise only moves pixels across 29/30 HU
    lama, nama = result["l3_quality"]["lama_area_cm2"], result["l3_quality"]["nama_area_cm2"]
    assert lama["mean_error"] > 0 > nama["mean_error"]
