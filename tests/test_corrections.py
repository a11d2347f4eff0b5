"""The correction loop: estimate --dicom-seg lists flagged levels in corrections.csv, a reader edits the SEG, and
prepare-seg corrections.csv carries the edit into the training arrays pixel for pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from conftest import invoke
from dicom_export import write_ct_series
from label_files import write_seg
from test_estimate_cli import FakeModels
from test_estimate_dicom import QC_64, marked_phantom

from bodycomp_cli.estimate.inputs import collect_inputs
from bodycomp_cli.estimate.run import EstimateOptions, run_estimate


def estimate(tmp_path: Path) -> tuple[np.ndarray, Path]:
    """Two series, estimated with --dicom-seg: `edge` has fat running off the image (flagged), `clear` has not."""
    z = np.arange(24) * 5.0
    flagged = marked_phantom(z)
    flagged[:, 20:40, -3:] = -100  # fat running off the image's right edge: a review flag
    write_ct_series(tmp_path / "dicom" / "edge", flagged, z, series_number=1)
    write_ct_series(tmp_path / "dicom" / "clear", marked_phantom(z, 1), z, series_number=2)
    options = EstimateOptions(show_progress=False, previews=False, save_masks=True, dicom_seg=True, qc=QC_64)
    run_estimate(collect_inputs([tmp_path / "dicom"]), FakeModels(), tmp_path / "out", options)
    return flagged, tmp_path / "out"


def test_corrections_csv_lists_flagged_levels_in_the_manifest_form_prepare_seg_reads(tmp_path):
    flagged, out = estimate(tmp_path)
    results = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False).set_index("series")
    corrections = pd.read_csv(out / "corrections.csv", dtype=str, keep_default_na=False)
    assert list(corrections.columns) == ["image", "mask", "series", "level", "z_mm", "group", "reason"]
    assert list(corrections["series"]) == ["dicom/edge"]  # the clear series has no flag
    row = corrections.iloc[0]
    assert row["level"] == "L3" and row["mask"] == "dicom_seg/dicom_edge_L3.dcm"
    assert "subcutaneous fat touches the edge of the image" in row["reason"]
    chosen = results.loc["dicom/edge"]
    assert float(row["z_mm"]) == float(chosen["L3_z_mm"])
    assert pydicom.dcmread(row["image"]).SOPInstanceUID == chosen["L3_sop_instance_uid"]

    # The reader's edit, as a viewer saves it: a new SEG on the same source image, with a block of muscle now
    # subcutaneous fat.
    predicted = np.load(out / "masks" / "dicom_edge_L3.npy")
    edited = predicted.copy()
    block = np.zeros_like(predicted, dtype=bool)
    block[:, :32] = True
    edited[block & (predicted == 1)] = 2
    assert (edited != predicted).sum() > 20
    write_seg(out / row["mask"], [pydicom.dcmread(row["image"])], edited[None])

    result = invoke(["prepare-seg", out / "corrections.csv", tmp_path / "arrays", "--size", "64", "--val-frac", "0"])
    assert result.exit_code == 0, result.output
    assert "segment 3 'visceral fat' is empty" in result.stderr  # FakeModels finds no visceral fat
    masks = np.load(tmp_path / "arrays" / "train_masks.npy")[..., 0]
    images = np.load(tmp_path / "arrays" / "train_images.npy")[..., 0]
    np.testing.assert_array_equal(masks, edited[None])
    np.testing.assert_array_equal(images[0], flagged[int(chosen["L3_slice_index"])])
