"""--per-vertebra and --volume (issue 23, item 4): exact means and volumes on a hand-made series, bounds from
the neighbouring levels or the nominal height, and blanks with their reason when a level is absent or cut."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_estimate_cli import THRESHOLD_MM, FakeModels

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.estimate.inputs import collect_inputs
from bodycomp_cli.estimate.run import EstimateOptions, run_estimate
from bodycomp_cli.estimate.vertebra import vertebra_bounds
from bodycomp_cli.estimate.volumes import check_volume_levels, parse_volume_specs

STEP_MM = 4.0
PIXEL_CM2 = 0.25 / 100  # 0.5 x 0.5 mm


class SpineModels(FakeModels):
    """L2, L3 and L4 where `centres` says (+z to the head); the segmentation thresholds HU as FakeModels'."""

    levels = ["L2", "L3", "L4"]

    def __init__(self, centres: tuple[float, float, float] = (89.0, 49.0, 13.0)) -> None:
        super().__init__()
        self.centres = centres

    def slice_outputs(self, hu_volume: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
        z = hu_volume[:, 0, 0].astype(np.float64)
        return np.stack([1 / (1 + np.exp(-(z - centre) / THRESHOLD_MM)) for centre in self.centres], axis=1)


def write_spine_series(path: Path, first_z: float = 0.0, n_slices: int = 30) -> None:
    """Slice k: 40 + k % 5 muscle pixels (40 HU) and 20 fat pixels (-100 HU); z = first_z + 4 k in pixel [0, 0]."""
    z = first_z + np.arange(n_slices) * STEP_MM
    hu = np.full((n_slices, 16, 16), -1000, dtype=np.int16)
    hu[:, 2:6, 2:12] = 40
    for k in range(n_slices):
        hu[k, 12, 2 : 2 + k % 5] = 40
    hu[:, 8:10, 2:12] = -100
    hu[:, 0, 0] = np.rint(z)
    np.savez(path, hu=hu, z_mm=z, pixel_spacing=np.array((0.5, 0.5)))


def estimate(tmp_path: Path, models: FakeModels, **options) -> tuple[pd.Series, Path]:
    out = tmp_path / "out"
    run_estimate(
        collect_inputs([tmp_path / "s.npz"]),
        models,
        out,
        EstimateOptions(previews=False, show_progress=False, **options),
    )
    return pd.read_csv(out / "results.csv", keep_default_na=False).iloc[0], out


def test_vertebra_bounds_halfway_to_neighbours_else_nominal() -> None:
    assert vertebra_bounds("L3", {"L2": 89.0, "L3": 49.0, "L4": 13.0}) == (31.0, 69.0, "L2 midpoint; L4 midpoint")
    assert vertebra_bounds("L3", {"L3": 49.0, "L4": 13.0}) == (31.0, 63.0, "nominal 28 mm; L4 midpoint")
    assert vertebra_bounds("L3", {"L3": 49.0}) == (35.0, 63.0, "nominal 28 mm")
    assert vertebra_bounds("T8", {"T8": 0.0}) == "no nominal height for T8: estimate both neighbouring levels (-L)"


def test_per_vertebra_means_over_every_slice_of_the_vertebra(tmp_path: Path) -> None:
    write_spine_series(tmp_path / "s.npz")
    models = SpineModels()
    row, out = estimate(tmp_path, models, per_vertebra=True)
    # L3: 31..69 mm holds z 32..68, slices 8..17, whose extra muscle pixels k % 5 sum to 20 (mean 2)
    assert row["L3_vertebra_n_slices"] == 10 and row["L3_vertebra_reason"] == ""
    assert row["L3_vertebra_from_mm"] == 31.0 and row["L3_vertebra_to_mm"] == 69.0
    assert row["L3_vertebra_bounds"] == "L2 midpoint; L4 midpoint"
    assert row["L3_vertebra_muscle_area_cm2"] == pytest.approx(42 * PIXEL_CM2)
    assert row["L3_vertebra_muscle_mean_hu"] == 40.0
    assert row["L3_vertebra_subcutaneous_fat_area_cm2"] == pytest.approx(20 * PIXEL_CM2)
    assert row["L3_vertebra_visceral_fat_area_cm2"] == 0.0 and row["L3_vertebra_visceral_fat_mean_hu"] == ""
    # L2: 14 mm (half of 28) above, L3's midpoint below: 69..103 holds z 72..100, 8 slices
    assert row["L2_vertebra_n_slices"] == 8 and row["L2_vertebra_bounds"] == "nominal 28 mm; L3 midpoint"
    assert row["L4_vertebra_n_slices"] == 8 and row["L4_vertebra_from_mm"] == -1.0  # within half a step of z 0
    # each level's own slice once, then each vertebra in batches of 16 at most
    assert models.segmented == [1, 1, 1, 8, 10, 8]
    before = (out / "results.csv").read_text()
    run_estimate(collect_inputs([tmp_path / "s.npz"]), SpineModels(), out, EstimateOptions(resume=True))
    assert (out / "results.csv").read_text() == before  # the text columns read back as they were


def test_a_vertebra_cut_by_the_scan_is_blank_with_its_reason(tmp_path: Path) -> None:
    write_spine_series(tmp_path / "s.npz", first_z=4.0)  # L4's vertebra reaches -1 mm: beyond 4 - 2
    row, _ = estimate(tmp_path, SpineModels(), per_vertebra=True)
    assert row["L4_vertebra_reason"] == "vertebra -1.0..31.0 mm cut by the scan"
    assert row["L4_vertebra_muscle_area_cm2"] == "" and row["L4_vertebra_n_slices"] == ""
    assert row["L3_vertebra_n_slices"] == 10


def test_volume_between_two_levels_counts_every_slice(tmp_path: Path) -> None:
    write_spine_series(tmp_path / "s.npz")
    models = SpineModels()
    _, out = estimate(tmp_path, models, volumes=(("L2", "L4"),))
    volume = pd.read_csv(out / "volumes.csv", keep_default_na=False).iloc[0]
    # slices 3 (z 12, L4's) to 22 (z 88, L2's): 20 slices of 4 mm; muscle 20 x 40 + 4 x (0+1+2+3+4) pixels
    assert volume["volume"] == "L2:L4" and volume["n_slices"] == 20 and volume["reason"] == ""
    assert volume["from_z_mm"] == 12.0 and volume["to_z_mm"] == 88.0 and volume["slice_step_mm"] == 4.0
    assert volume["muscle_cm3"] == pytest.approx(840 * PIXEL_CM2 * 0.4)
    assert volume["subcutaneous_fat_cm3"] == pytest.approx(400 * PIXEL_CM2 * 0.4)
    assert volume["muscle_mean_hu"] == 40.0 and volume["visceral_fat_cm3"] == 0.0
    assert models.segmented == [1, 1, 1, 16, 4]
    assert (out / "volumes" / "s.csv").is_file()


@pytest.mark.parametrize(
    ("centres", "reason"),
    [
        ((89.0, 49.0, -300.0), "L4: not in scan"),
        ((89.0, 49.0, -4.0), "L4 lies beyond the scan's end (-4.0 mm): the range is cut"),
    ],
)
def test_volume_is_blank_when_a_level_is_absent_or_cut(tmp_path: Path, centres, reason) -> None:
    write_spine_series(tmp_path / "s.npz")
    _, out = estimate(tmp_path, SpineModels(centres), volumes=(("L2", "L4"),))
    volume = pd.read_csv(out / "volumes.csv", keep_default_na=False).iloc[0]
    assert volume["reason"] == reason
    assert volume["muscle_cm3"] == "" and volume["n_slices"] == ""


def test_volume_specs() -> None:
    assert parse_volume_specs(["L1:L5", "T12:L1, L3:L4", "L1:L5"]) == [("L1", "L5"), ("T12", "L1"), ("L3", "L4")]
    for bad in ("L1-L5", "L1:L1", "L1:", ":L5,"):
        with pytest.raises(BodycompError, match="--volume"):
            parse_volume_specs([bad])
    with pytest.raises(BodycompError, match=r"--volume L1:L5: level L5 is not estimated \(levels: L1, L3\)"):
        check_volume_levels([("L1", "L5")], ["L1", "L3"])


REAL_SEG = (
    Path(__file__).resolve().parent.parent.parent / "shared/realct/totalsegmentator/example_seg_fast_force_split.nii.gz"
)


@pytest.mark.skipif(
    not REAL_SEG.is_file() and not os.environ.get("CI"), reason="../shared/realct is absent (a user's clone)"
)
def test_vertebra_bounds_hold_the_real_l3_and_little_of_its_neighbours() -> None:
    """On TotalSegmentator's vertebra labels of a real abdominal CT (3 mm): the slices within L3's bounds hold
    most of L3's voxels and few of L2's or L4's, from the neighbours' centres and from the nominal 28 mm alike."""
    import nibabel as nib

    image = nib.load(REAL_SEG)
    labels = np.asarray(image.dataobj)
    z = image.affine[2, 2] * np.arange(labels.shape[2]) + image.affine[2, 3]  # RAS, no rotation: +z to the head
    per_slice = {level: (labels == code).sum(axis=(0, 1)) for level, code in (("L2", 30), ("L3", 29), ("L4", 28))}
    centres = {level: float((counts * z).sum() / counts.sum()) for level, counts in per_slice.items()}
    for given, l3_share in ((centres, 0.95), ({"L3": centres["L3"]}, 0.9)):
        low, high, _ = vertebra_bounds("L3", given)
        inside = (z >= low) & (z <= high)
        share = {level: counts[inside].sum() / counts.sum() for level, counts in per_slice.items()}
        assert share["L3"] >= l3_share and share["L2"] <= 0.1 and share["L4"] <= 0.1, (given, share)
