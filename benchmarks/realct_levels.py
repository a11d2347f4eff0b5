"""Phantom-trained models on real CT: is every level inside its vertebra or flagged, and is an absent L3 absent?

Usage:
    python benchmarks/realct_levels.py SELECT_RUN SEG_RUN [--output DIR]
Reads ../shared/realct/totalsegmentator (see its README): example_ct.nii.gz (abdomen and pelvis, holds L3; the
multilabel example_seg_fast_force_split.nii.gz gives each vertebra's extent, L3 = label 29) and dicom_series/
(20 slices at T11/T12: no L3). Prints, per series and level, the chosen z, the vertebra's extent, the reason,
the review and the confidence.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REALCT = Path(__file__).resolve().parents[2] / "shared" / "realct" / "totalsegmentator"
ABDOMEN = REALCT / "example_ct.nii.gz"
VERTEBRAE = REALCT / "example_seg_fast_force_split.nii.gz"
CHEST_DICOM = REALCT / "dicom_series"
# TotalSegmentator v2 `total` labels of the vertebrae estimate may be asked for (README of shared/realct)
VERTEBRA_LABELS = {"L5": 27, "L4": 28, "L3": 29, "L2": 30, "L1": 31, "T12": 32, "T11": 33}


def vertebra_extent_mm(level: str) -> tuple[float, float] | None:
    """(lowest, highest) z of the slices of example_ct that hold the vertebra, in the z estimate reads it with.

    The multilabel lies on example_ct's grid: turned into display orientation as the CT is, its slices have the
    CT's z."""
    from nibabel.orientations import apply_orientation

    from bodycomp_cli.io.volumes import load_nifti_3d, nifti_display_transform, read_nifti

    image, data, _, _ = load_nifti_3d(VERTEBRAE)
    transform, _ = nifti_display_transform(image.affine, data.shape, VERTEBRAE)
    labels, z_mm = apply_orientation(data, transform), read_nifti(ABDOMEN).z_mm
    holding = np.flatnonzero((labels == VERTEBRA_LABELS[level]).any(axis=(1, 2)))
    return (float(z_mm[holding].min()), float(z_mm[holding].max())) if holding.size else None


def check_real_ct(select_run: Path, seg_run: Path, output: Path) -> pd.DataFrame:
    """Estimate both series with every level the run has; one row per (series, level) that it has a vertebra for."""
    from bodycomp_cli.estimate.inputs import collect_inputs
    from bodycomp_cli.estimate.models import load_estimator_models
    from bodycomp_cli.estimate.run import EstimateOptions, run_estimate

    models = load_estimator_models(select_run, [str(seg_run)], None, gpus=0)
    options = EstimateOptions(previews=False, show_progress=False, overwrite=True)
    run_estimate(collect_inputs([ABDOMEN, CHEST_DICOM]), models, output, options)
    results = pd.read_csv(output / "results.csv", keep_default_na=False, dtype=str)
    rows = []
    for _, row in results.iterrows():
        abdomen = row["series"] == collect_inputs([ABDOMEN])[0].series
        for level in models.levels:
            extent = vertebra_extent_mm(level) if abdomen and level in VERTEBRA_LABELS else None
            z = float(row[f"{level}_z_mm"]) if row[f"{level}_z_mm"] else None
            inside = None if extent is None or z is None else bool(extent[0] - 1.5 <= z <= extent[1] + 1.5)
            rows.append(
                {
                    "series": "abdomen (NIfTI)" if abdomen else "chest (DICOM, T11/T12)",
                    "level": level,
                    "z_mm": z,
                    "vertebra_mm": "" if extent is None else f"{extent[0]:.0f}..{extent[1]:.0f}",
                    "inside": inside,
                    "reason": row[f"{level}_reason"],
                    "review": row[f"{level}_review"],
                    "confidence": row[f"{level}_confidence"],
                    "lumbar_vertebrae": row["lumbar_vertebrae"] or row["lumbar_vertebrae_reason"],
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("select_run", type=Path)
    parser.add_argument("seg_run", type=Path)
    parser.add_argument("--output", type=Path, default=Path(tempfile.mkdtemp(prefix="realct-levels-")))
    args = parser.parse_args()
    table = check_real_ct(args.select_run, args.seg_run, args.output)
    with pd.option_context("display.max_colwidth", 200, "display.width", 250):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
