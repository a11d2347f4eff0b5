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
