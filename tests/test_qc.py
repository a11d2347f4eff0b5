"""QC rejections: each rule on a volume that breaks only that rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bodycomp_cli.estimate.qc import QcSettings, qc_failure
from bodycomp_cli.io.volumes import Volume


def good_volume(n_slices: int = 24, step: float = 2.5) -> Volume:
    hu = np.full((n_slices, 16, 16), -1000, dtype=np.int16)  # air around the patient
    hu[:, 4:12, 4:12] = 40  # soft tissue
    z = np.arange(n_slices) * step + 100.0
    return Volume(hu=hu, z_mm=z, pixel_spacing=(0.8, 0.8), modality="CT", source=Path("s.npz"))


def test_a_plain_ct_series_passes() -> None:
    assert qc_failure(good_volume(), QcSettings()) is None
    assert qc_failure(good_volume(), QcSettings(min_slices=24)) is None


def test_other_modalities_are_rejected_but_unknown_modality_is_not() -> None:
    volume = good_volume()
    volume.modality = "MR"
    assert qc_failure(volume, QcSettings()) == "modality is MR, not CT"
    volume.modality = None  # npz and NIfTI carry no modality
    assert qc_failure(volume, QcSettings()) is None


def test_too_few_slices() -> None:
    assert qc_failure(good_volume(n_slices=19), QcSettings()) == "19 slices, fewer than the minimum 20"
    assert qc_failure(good_volume(n_slices=19), QcSettings(min_slices=10)) is None


def test_uneven_z_spacing_beyond_the_tolerance() -> None:
    volume = good_volume()
    volume.z_mm = volume.z_mm.copy()
    volume.z_mm[10:] += 2.5  # one missing slice: a 5 mm gap in a 2.5 mm series
    reason = qc_failure(volume, QcSettings())
    assert reason is not None and reason.startswith("z spacing is not uniform: steps range 2.5-5 mm")
    volume.z_mm = good_volume().z_mm + np.where(np.arange(24) % 2, 0.03, 0.0)  # scanner jitter, 0.03 mm
    assert qc_failure(volume, QcSettings(spacing_tolerance_mm=0.1)) is None
    assert qc_failure(volume, QcSettings(spacing_tolerance_mm=0.01)) is not None


def test_repeated_slice_positions() -> None:
    volume = good_volume()
    volume.z_mm = np.sort(np.r_[volume.z_mm[:-1], volume.z_mm[5]])
    assert "share a z position" in qc_failure(volume, QcSettings())


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda hu: hu + 1024, "no air in the series (lowest value 24)"),  # stored values, rescale missing
        (lambda hu: np.clip(hu, -1000, -600), "no soft tissue"),
        (lambda hu: hu.astype(np.float32) * 100, "outside what a CT scanner writes"),
    ],
)
def test_implausible_hu(change, fragment: str) -> None:
    volume = good_volume()
    volume.hu = change(volume.hu)
    reason = qc_failure(volume, QcSettings())
    assert reason is not None and fragment in reason
