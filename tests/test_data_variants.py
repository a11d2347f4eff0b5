"""Data the original toolkit read that must work here too: pre-windowed arrays, 16-bit PNGs, extra PNGs,
the ZOffset column and seven-digit PNG names."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_user_error, invoke
from helpers_train import make_seg_data

from bodycomp_cli.data.segmentation import validate_segmentation_data
from bodycomp_cli.tasks.segmentation import SegmentationSettings, SegmentationTask

torch.set_num_threads(1)
FAST = ["--encoder", "resnet18", "--image-size", "32", "-b", "4", "--workers", "0", "--steps-per-epoch", "1", "-g", "0"]


def prewindow(folder, dtype=np.int16):
    """Window the HU arrays as the original's -p did, clip((HU + 160) * 256 / 400, 0, 255), and store them."""
    for split in ("train", "val"):
        hu = np.load(folder / f"{split}_images.npy").astype(np.float64)
        np.save(folder / f"{split}_images.npy", np.clip((hu + 160) * 256 / 400, 0, 255).astype(dtype))
    return folder


def test_prewindowed_arrays_are_refused_unless_input_windowed(tmp_path):
    data = prewindow(make_seg_data(tmp_path / "data", n_train=4, n_val=2, size=32))
    result = invoke(["train-seg", data, tmp_path / "m", "-a", "x", "-e", "1", *FAST])
    assert_user_error(result, "train_images.npy", "within 0-255", "already windowed", "--input-windowed")
    assert not (tmp_path / "m").exists()
    result = invoke(["train-seg", data, tmp_path / "m", "-a", "x", "-e", "1", "--input-windowed", *FAST])
    assert result.exit_code == 0, (result.stderr or "") + result.output + repr(result.exception)
    config = json.loads((tmp_path / "m" / "x" / "config.json").read_text())
    # Inference still windows raw HU with the window the arrays were made with.
    assert config["input_windowed"] is True and config["window"] == {"level": 40.0, "width": 400.0}


def test_prewindowed_values_reach_the_model_as_windowed_hu_would(tmp_path):
    hu_data = make_seg_data(tmp_path / "hu", n_train=2, n_val=1, size=32)
    hu_item = SegmentationTask(SegmentationSettings(image_size=32), hu_data).datasets()[1][0]["image"]
    windowed = prewindow(make_seg_data(tmp_path / "win", n_train=2, n_val=1, size=32), np.float32)
    settings = SegmentationSettings(image_size=32, input_windowed=True)
    item = SegmentationTask(settings, windowed).datasets()[1][0]["image"]
    # v / 256 against (HU + 160) / 400: equal, except where the original's 256/400 scale clipped at 255.
    assert torch.allclose(item, hu_item.clamp(max=255 / 256), atol=1e-6)


def test_uint8_arrays_accepted_with_input_windowed_and_raw_hu_refused_with_it(tmp_path):
    data = prewindow(make_seg_data(tmp_path / "u8", n_train=2, n_val=1, size=32), np.uint8)
    assert set(validate_segmentation_data(data, 4, False, input_windowed=True)) == {"train", "val"}
    hu = make_seg_data(tmp_path / "hu", n_train=2, n_val=1, size=32)
    result = invoke(["train-seg", hu, tmp_path / "m", "--input-windowed", *FAST])
    assert_user_error(result, "train_images.npy", "--input-windowed", "outside 0-255", "drop --input-windowed")
    assert_user_error(invoke(["train-seg", hu, tmp_path / "m", "-p", "--input-windowed"]), "-p", "--input-windowed")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("flag", ["-p", "--apply_window_function", "--apply-window-function"])
def test_apply_window_function_on_raw_hu_is_the_default(tmp_path, monkeypatch, flag):
    import bodycomp_cli.tasks.segmentation as segmentation

    seen = {}
    monkeypatch.setattr(segmentation, "train_segmentation", lambda *args: seen.update(settings=args[2]))
    assert invoke(["train-seg", tmp_path / "d", tmp_path / "m", flag]).exit_code == 0
    assert seen["settings"].input_windowed is False


def write_png16(path, values: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(values.astype(np.uint16)).save(path)


def test_slice_data_variants_of_the_original(tmp_path):
    """16-bit PNGs holding 8-bit values, extra PNGs (a warning), and ZOffset preferred over ZOffset_L3."""
    import pandas as pd
    from helpers_train import make_select_data

    from bodycomp_cli.data.slices import read_gray_png, validate_slice_data

    data = make_select_data(tmp_path / "data", size=32)
    train_dir = data / "images" / "train"
    eight_bit = read_gray_png(train_dir / "000001.png")
    write_png16(train_dir / "000001.png", eight_bit)
    meta = pd.read_csv(data / "meta" / "train.csv", index_col=0)
    meta["ZOffset"] = meta["ZOffset_L3"] + 100.0  # both columns: the original read ZOffset
    meta.to_csv(data / "meta" / "train.csv")
    rows = len(meta)
    write_png16(train_dir / f"{rows:06d}.png", eight_bit)  # one PNG more than the CSV has rows
    with pytest.warns(UserWarning, match="1 PNG images beyond .* rows are not used"):
        splits = validate_slice_data(data, ["L3"])
    np.testing.assert_allclose(splits["train"].meta.offsets_mm[:, 0], meta["ZOffset"].to_numpy(dtype=np.float32))
    from bodycomp_cli.data.slices import SliceSelectionDataset

    item = SliceSelectionDataset(splits["train"], 32, 10.0)[1]["image"]
    assert torch.allclose(item[0] * 255, torch.from_numpy(eight_bit.astype(np.float32)), atol=1e-4)

    write_png16(train_dir / "000002.png", np.full((32, 32), 300))
    with pytest.warns(UserWarning), pytest.raises(Exception, match="000002.png: 16-bit PNG with value 300"):
        validate_slice_data(data, ["L3"])


def test_extra_pngs_warn_on_one_line_in_the_cli(tmp_path):
    from helpers_train import make_select_data

    data = make_select_data(tmp_path / "data", size=32)
    (data / "images" / "val" / "999999.png").write_bytes((data / "images" / "val" / "000000.png").read_bytes())
    args = ["--arch", "resnet10t", "--image-size", "32", "-b", "4", "--workers", "0", "--steps-per-epoch", "1"]
    result = invoke(["train-select", data, tmp_path / "m", "-a", "x", "-e", "1", "-g", "0", "--quiet", *args])
    assert result.exit_code == 0, (result.stderr or "") + result.output + repr(result.exception)
    stderr = result.stderr or ""
    assert "warning: " in stderr and "1 PNG images beyond" in stderr and "Warning" not in stderr


def test_png_names_past_999999_have_seven_digits(tmp_path, monkeypatch):
    """The id check on a listing of 1,000,002 names, without writing a million files."""
    from pathlib import Path

    import bodycomp_cli.data.slices as slices

    assert slices.png_name(999_999) == "999999.png" and slices.png_name(1_000_000) == "1000000.png"
    count = 1_000_001
    listing = [Path(slices.png_name(i)) for i in range(count + 1)]  # one more than the rows
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(listing))
    monkeypatch.setattr(Path, "is_dir", lambda self: True)
    checked = []
    monkeypatch.setattr(slices, "_check_png", lambda path: checked.append(path.name))
    with pytest.warns(UserWarning, match="1 PNG images beyond"):
        slices._check_pngs(tmp_path / "images", count, tmp_path / "train.csv")
    assert len(checked) == count and checked[-1] == "1000000.png"
    listing.pop(1_000_000)  # 1000000.png missing: named, not a StopIteration
    with pytest.raises(slices.BodycompError, match="1000000.png is missing"):
        slices._check_pngs(tmp_path / "images", count, tmp_path / "train.csv")
