"""Phantom-trained models on real CT: is every level inside its vertebra or flagged, and is an absent L3 absent?

Usage:
    python -m benchmarks.realct_levels SELECT_RUN SEG_RUN [--output DIR]
Reads ../shared/realct/totalsegmentator (see its README): example_ct.nii.gz (abdomen and pelvis, holds L3) and
dicom_series/ (20 slices at T11/T12: no L3), with the TotalSegmentator multilabel of each, which gives every
vertebra's extent. Prints, per series and level, the chosen z, the vertebra's extent, the verdict (`ok`: inside its
vertebra or flagged, and absent when the vertebra is not in the scan), the reason, the review and the confidence.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REALCT = Path(__file__).resolve().parents[2] / "shared" / "realct" / "totalsegmentator"
ABDOMEN = REALCT / "example_ct.nii.gz"
CHEST_DICOM = REALCT / "dicom_series"
# Each CT and the TotalSegmentator multilabel of its vertebrae (README of shared/realct)
MULTILABELS = {
    ABDOMEN: REALCT / "example_seg_fast_force_split.nii.gz",
    CHEST_DICOM: REALCT / "example_seg_dicom.nii.gz",
}
NAMES = {ABDOMEN: "abdomen (NIfTI)", CHEST_DICOM: "chest (DICOM, T11/T12)"}
# TotalSegmentator v2 `total` labels of the vertebrae: 27 L5, 28 L4, ..., 32 T12, 33 T11, ..., 39 T5
VERTEBRA_LABELS = {**{f"L{i}": 32 - i for i in range(1, 6)}, **{f"T{i}": 44 - i for i in range(5, 13)}}


def vertebra_extent_mm(multilabel: Path, level: str) -> tuple[float, float] | None:
    """(lowest, highest) world z of the multilabel's voxels of the vertebra (None: not in it). RAS and LPS share
    z, which is the z estimate reports (ImagePositionPatient, or the NIfTI affine)."""
    import nibabel as nib

    image = nib.load(multilabel)
    voxels = np.argwhere(np.asanyarray(image.dataobj) == VERTEBRA_LABELS[level])
    if not len(voxels):
        return None
    z = nib.affines.apply_affine(image.affine, voxels)[:, 2]
    return float(z.min()), float(z.max())


def judge(extent: tuple[float, float] | None, scan: tuple[float, float], z: float | None, flagged: bool) -> str:
    """`ok` or what is wrong with one level of one series. A vertebra cut by an end of the scan may be called
    absent (its centre may lie outside) or be given a slice inside it."""
    step = 3.5  # the coarser slice spacing (3 mm) and a half
    if extent is None:
        return "ok" if z is None else "absent level given a slice"
    cut = extent[0] <= scan[0] + step or extent[1] >= scan[1] - step
    if z is None:
        return "ok" if cut else "present level called absent"
    if extent[0] - 1.5 <= z <= extent[1] + 1.5 or flagged:
        return "ok"
    return "outside its vertebra and not flagged"


def check_real_ct(select_run: Path, seg_run: Path, output: Path) -> pd.DataFrame:
    """Estimate both series with every level the run has; one row per (series, level), judged (`judge`)."""
    from bodycomp_cli.estimate.inputs import collect_inputs
    from bodycomp_cli.estimate.models import load_estimator_models
    from bodycomp_cli.estimate.run import EstimateOptions, run_estimate

    models = load_estimator_models(select_run, [str(seg_run)], None, gpus=0)
    options = EstimateOptions(previews=False, show_progress=False, overwrite=True)
    inputs = collect_inputs([ABDOMEN, CHEST_DICOM])
    run_estimate(inputs, models, output, options)
    results = pd.read_csv(output / "results.csv", keep_default_na=False, dtype=str).set_index("series")
    rows = []
    for entry in inputs:
        row = results.loc[entry.series]
        scan_z = _scan_z_mm(entry.path)
        for level in models.levels:
            extent = vertebra_extent_mm(MULTILABELS[entry.path], level) if level in VERTEBRA_LABELS else None
            z = float(row[f"{level}_z_mm"]) if row[f"{level}_z_mm"] else None
            rows.append(
                {
                    "series": NAMES[entry.path],
                    "level": level,
                    "z_mm": z,
                    "vertebra_mm": "" if extent is None else f"{extent[0]:.0f}..{extent[1]:.0f}",
                    "scan_mm": f"{scan_z[0]:.0f}..{scan_z[1]:.0f}",
                    "verdict": judge(extent, scan_z, z, bool(row[f"{level}_review"])),
                    "reason": row[f"{level}_reason"],
                    "review": row[f"{level}_review"],
                    "confidence": row[f"{level}_confidence"],
                    "lumbar_vertebrae": row["lumbar_vertebrae"] or row["lumbar_vertebrae_reason"],
                }
            )
    return pd.DataFrame(rows)


def _scan_z_mm(path: Path) -> tuple[float, float]:
    from bodycomp_cli.io.volumes import read_volume

    z = read_volume(path).z_mm
    return float(z.min()), float(z.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("select_run", type=Path)
    parser.add_argument("seg_run", type=Path)
    parser.add_argument("--output", type=Path, default=None, help="keep the estimate here (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="realct-levels-") as scratch:  # removed at the end: nothing is left behind
        table = check_real_ct(args.select_run, args.seg_run, args.output or Path(scratch) / "estimate")
    with pd.option_context("display.max_colwidth", 200, "display.width", 250):
        print(table.to_string(index=False))
    wrong = table[table["verdict"] != "ok"]
    print(f"{len(table) - len(wrong)}/{len(table)} levels ok (inside the vertebra or flagged; absent when absent)")
    raise SystemExit(0 if wrong.empty else 1)


if __name__ == "__main__":
    main()
