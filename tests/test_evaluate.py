"""evaluate's metrics on known masks and known curves (fake predictors); the CLI runs in test_estimate_cli."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest

from bodycomp_cli.core.metrics import dice_summary, offsets_from_outputs, segmentation_counts
from bodycomp_cli.core.runconfig import RunConfig
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.tasks.segmentation.scoring import evaluate_segmentation
from bodycomp_cli.tasks.slice_selection.scoring import evaluate_slice_selection

CLASSES = ["background", "muscle", "subcutaneous_fat", "visceral_fat"]


def test_dice_on_known_masks() -> None:
    truth = np.zeros((3, 4, 4), dtype=np.uint8)
    prediction = np.zeros_like(truth)
    truth[0, 0, :4] = 1  # slice 0: muscle 4 px true, 2 of them found, plus 2 false
    prediction[0, 0, :2] = 1
    prediction[0, 1, :2] = 1
    truth[1, 2, :] = 2  # slice 1: fat exactly right, no muscle anywhere (skipped, not 0 or 1)
    prediction[1, 2, :] = 2
    truth[2, 3, 0] = 1  # slice 2: muscle missed entirely
    counts = segmentation_counts(prediction, truth, 4)
    np.testing.assert_array_equal(counts[0, 0], [2, 2, 2])  # tp, fp, fn
    dice = dice_summary(counts)
    mean, pooled, per_slice = dice.mean, dice.pooled, dice.per_slice
    assert per_slice[0, 0] == pytest.approx(0.5) and np.isnan(per_slice[1, 0]) and per_slice[2, 0] == 0.0
    assert mean[0] == pytest.approx(0.25)  # (0.5 + 0) / 2 slices where muscle exists
    assert pooled[0] == pytest.approx(2 * 2 / (4 + 5))
    assert mean[1] == 1.0 and pooled[1] == 1.0
    assert np.isnan(mean[2]) and np.isnan(pooled[2])  # no visceral fat anywhere


def write_seg_data(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir()
    masks = np.zeros((5, 8, 8, 1), dtype=np.uint8)
    masks[:, 1:5, 1:5] = 1  # 16 px muscle
    masks[:, 6:8, :] = 2  # 16 px fat
    images = np.where(masks == 1, 40, np.where(masks == 2, -100, -1000)).astype(np.int16)
    np.save(folder / "val_images.npy", images)
    np.save(folder / "val_masks.npy", masks)
    return images, masks


def test_segmentation_report_with_area_error_in_cm2_or_pixels(tmp_path: Path) -> None:
    write_seg_data(tmp_path / "data")

    def predict(images: np.ndarray) -> np.ndarray:  # muscle one row too tall: 4 px too many, 12 of 16 right
        labels = np.zeros(images.shape, dtype=np.uint8)
        labels[:, 0:4, 1:5] = 1
        labels[:, 6:8, :] = 2
        return labels

    n_val = len(np.load(tmp_path / "data" / "val_masks.npy"))
    ids = [f"pt{k}/L3 slice" for k in range(n_val)]  # prepare-seg's ids, as its val_index.csv keeps them
    (tmp_path / "data" / "val_index.csv").write_text("row,id\n" + "".join(f"{k},{i}\n" for k, i in enumerate(ids)))
    report = evaluate_segmentation(CLASSES, predict, tmp_path / "data", "val", tmp_path, batch_size=2)
    worst = report["worst_slices"][0]  # named by slice id, made safe for a file name
    assert worst["id"] == ids[worst["slice"]] and worst["png"] == f"worst_1_pt{worst['slice']}_L3_slice.png"
    muscle = report["tissues"]["muscle"]
    assert muscle["dice_mean"] == pytest.approx(2 * 12 / 32) and muscle["dice_pooled"] == pytest.approx(0.75)
    assert report["area_unit"] == "px"
    assert muscle["area_error_abs_px"] == 0.0 and muscle["area_error_signed_px"] == 0.0  # 16 px predicted too
    assert report["tissues"]["subcutaneous_fat"]["dice_mean"] == 1.0
    assert (
        report["tissues"]["visceral_fat"]["dice_mean"] is None and report["tissues"]["visceral_fat"]["dice_slices"] == 0
    )
    assert len(report["worst_slices"]) == 4 and (tmp_path / report["worst_slices"][0]["png"]).is_file()

    def predict_small(images: np.ndarray) -> np.ndarray:
        labels = predict(images)
        labels[:, 0, :] = 0  # 4 px of muscle fewer than the truth
        return labels

    report = evaluate_segmentation(CLASSES, predict_small, tmp_path / "data", "val", tmp_path, pixel_spacing_mm=5.0)
    assert report["area_unit"] == "cm2"
    assert report["tissues"]["muscle"]["area_error_signed_cm2"] == pytest.approx(-4 * 0.25)  # 4 px x 25 mm^2


def test_segmentation_data_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(BodycompError, match="val_images.npy: not found"):
        evaluate_segmentation(CLASSES, lambda x: x, tmp_path, "val", tmp_path)


def write_slice_data(folder: Path, threshold: float) -> None:
    """Two series, 4 mm steps; L3 at z = 42 and z = 101. Each PNG's pixel [0, 0] holds its true offset + 128."""
    rows = []
    for series, z_level in (("a", 42.0), ("b", 101.0)):
        for slice_index, z in enumerate(np.arange(25) * 4.0):
            rows.append({"series": series, "slice_index": slice_index, "z_mm": z, "ZOffset_L3": z - z_level})
    meta = pd.DataFrame(rows)
    meta.loc[meta["series"] == "b", "ZOffset_L3"] = np.nan  # level b: above the series, offsets blank
    (folder / "images" / "val").mkdir(parents=True)
    (folder / "meta").mkdir()
    meta.to_csv(folder / "meta" / "val.csv")
    for index, row in meta.iterrows():
        image = np.zeros((8, 8), dtype=np.uint8)
        image[0, 0] = int(np.clip(row["z_mm"] - (42.0 if row["series"] == "a" else 101.0) + 128, 0, 255))
        iio.imwrite(folder / "images" / "val" / f"{index:06d}.png", image)


def test_slice_selection_report(tmp_path: Path) -> None:
    threshold = 10.0
    write_slice_data(tmp_path, threshold)
    config = RunConfig("slice_selection", "resnet10t", 32, levels=["L3"], threshold=threshold)

    def predict(images: np.ndarray) -> np.ndarray:  # reads the offset and is 3 mm too high everywhere
        offset = images[:, 0, 0].astype(np.float64) - 128 + 3.0
        return (1 / (1 + np.exp(-offset / threshold)))[:, None]

    report = evaluate_slice_selection(config, predict, tmp_path, "val", batch_size=7)
    level = report["levels"]["L3"]
    assert level["mae_mm"] == pytest.approx(3.0) and level["n_near"] == 16  # |offset| <= 30 mm: z 12, 16, .., 72
    selection = level["selection"]
    assert selection["n_series"] == 1  # series b has no level
    # The curve crosses zero 3 mm below the level: z 39 -> the 40 mm slice, 2 mm from 42, the nearest slice.
    assert level["series"][0]["chosen_z_mm"] == 40.0 and level["series"][0]["error_mm"] == pytest.approx(-2.0)
    assert selection["median_slices"] == 0.0 and selection["within_5mm"] == 1.0


def test_offsets_from_outputs_inverts_the_target_sigmoid() -> None:
    np.testing.assert_allclose(offsets_from_outputs(np.array([0.5, 1 / (1 + np.e)]), 10.0), [0.0, -10.0])


def test_evaluation_json_is_plain_json(tmp_path: Path) -> None:
    # Reports hold only JSON types (no numpy scalars), so evaluation.json can be written and read back.
    write_seg_data(tmp_path / "data")
    report = evaluate_segmentation(CLASSES, lambda x: np.zeros(x.shape, np.uint8), tmp_path / "data", "val", tmp_path)
    assert json.loads(json.dumps(report))["tissues"]["muscle"]["dice_mean"] == 0.0
