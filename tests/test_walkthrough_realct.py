"""The walk-through of docs/walkthrough-real-data.md, through the CLI on the real TotalSegmentator files, tinier:
a NIfTI CT with its vertebra multilabel and tissue masks -> both training layouts -> one step of each training."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import invoke  # as test_one_source does: rt-utils installs a package named tests
from PIL import Image

REALCT = Path(__file__).resolve().parents[2] / "shared" / "realct"
TS = REALCT / "totalsegmentator"
SEG_Z_MM = {"train": [160.302, 166.302, 172.302], "val": [178.302]}  # slices of example_ct_sm (its own z)
TISSUE_CLASSES = {"skeletal_muscle": 1, "subcutaneous_fat": 2, "torso_fat": 3}  # --label-map totalsegmentator
SIZE = 128


def expected_masks(z_mm: list[float]) -> np.ndarray:
    """The tissue files' slices at z_mm as bodycomp classes, in display orientation, resized nearest to SIZE."""
    ct = nib.load(str(TS / "example_ct_sm.nii.gz"))
    tissues = {
        name: np.asanyarray(nib.load(str(TS / "tissue_types" / f"{name}.nii.gz")).dataobj) for name in TISSUE_CLASSES
    }
    masks = []
    for z in z_mm:
        k = int(round((z - ct.affine[2, 3]) / ct.affine[2, 2]))
        labels = np.zeros(tissues["torso_fat"].shape[:2], dtype=np.uint8)
        for name, value in TISSUE_CLASSES.items():
            assert not labels[tissues[name][:, :, k] > 0].any()  # the three masks do not overlap
            labels[tissues[name][:, :, k] > 0] = value
        display = labels.T[::-1, ::-1]  # RAS storage: rows A -> P and columns R -> L are both reversed
        masks.append(np.asarray(Image.fromarray(np.ascontiguousarray(display)).resize((SIZE, SIZE), Image.NEAREST)))
    return np.stack(masks)


def ok(args: list) -> None:
    result = invoke(args)
    assert result.exit_code == 0, result.output + (result.stderr or "") + repr(result.exception)


def test_walkthrough_from_nifti_ct_vertebrae_and_tissue_masks_to_both_trainings(tmp_path):
    if not TS.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{TS} is missing, and CI must run the real-CT tests")
        pytest.skip(f"{REALCT} is absent (the real CT lives beside the repository, ../shared/realct)")
    ct, vertebrae = TS / "example_ct.nii.gz", TS / "example_seg_fast_force_split.nii.gz"
    series = [
        {"series": f"ts_{split}", "path": ct, "vertebrae": vertebrae, "split": split} for split in ("train", "val")
    ]
    pd.DataFrame(series).to_csv(tmp_path / "series.csv", index=False)
    ok(["prepare-slices", tmp_path / "series.csv", tmp_path / "slices", "-L", "L1", "L3"]
       + ["--vertebra-labels", "totalsegmentator", "--workers", "1"])  # fmt: skip
    meta = pd.read_csv(tmp_path / "slices" / "meta" / "train.csv", index_col=0)
    assert len(meta) == 112
    assert round(float((meta["z_mm"] - meta["ZOffset_L3"]).iloc[0]), 1) == 314.9  # the README's L3 centroid
    tissues = [
        {"image": TS / "example_ct_sm.nii.gz", "mask": TS / "tissue_types", "z_mm": z, "split": split}
        for split, zs in SEG_Z_MM.items()
        for z in zs
    ]
    pd.DataFrame(tissues).to_csv(tmp_path / "tissues.csv", index=False)
    ok(["prepare-seg", tmp_path / "tissues.csv", tmp_path / "seg", "--label-map", "totalsegmentator", "--size", SIZE])
    for split, zs in SEG_Z_MM.items():
        masks = np.load(tmp_path / "seg" / f"{split}_masks.npy")
        np.testing.assert_array_equal(masks[..., 0], expected_masks(zs))
    fast = ["--image-size", "32", "-e", "1", "--steps-per-epoch", "1", "--workers", "0", "-g", "0", "--quiet"]
    runs = tmp_path / "runs"
    ok(["train-select", tmp_path / "slices", runs, "-a", "select", "-L", "L1", "L3", "--arch", "resnet10t"]
       + ["-b", "4", "--no-series-head", *fast])  # fmt: skip
    ok(["train-seg", tmp_path / "seg", runs, "-a", "seg", "--encoder", "resnet18", "-b", "2", *fast])
    for run in ("select", "seg"):
        history = pd.read_csv(runs / run / "history.csv")
        assert len(history) == 1 and np.isfinite(history["train_loss"]).all(), run
    select = json.loads((runs / "select" / "config.json").read_text())
    assert (select["task"], select["levels"], select["data_dir"]) == (
        "slice_selection",
        ["L1", "L3"],
        str(tmp_path / "slices"),
    )
    assert json.loads((runs / "seg" / "config.json").read_text())["task"] == "segmentation"
