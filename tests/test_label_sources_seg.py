"""prepare-seg masks from DICOM SEGs written by highdicom: frames placed by their plane positions, exact labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from conftest import assert_user_error, invoke
from label_files import write_seg, write_series
from pydicom.pixels import pack_bits, unpack_bits

H = W = 8
Z_MM = [10.0, 12.5, 15.0, 17.5]
FEET_FIRST = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def series(tmp_path: Path, seed: int = 0, orientation=FEET_FIRST):
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1000, 1000, size=(len(Z_MM), H, W)).astype(np.int16)
    labels = rng.integers(0, 4, size=(len(Z_MM), H, W)).astype(np.uint8)
    sources = write_series(tmp_path / "ct", hu, Z_MM, orientation=orientation, head_first=False)
    return hu, labels, sources


def prepare(tmp_path: Path, rows: list[dict], *extra: str):
    pd.DataFrame([{**row, "split": "train"} for row in rows]).to_csv(tmp_path / "m.csv", index=False)
    return invoke(["prepare-seg", tmp_path / "m.csv", tmp_path / "out", "--size", str(W), *extra])


def masks(tmp_path: Path) -> np.ndarray:
    return np.load(tmp_path / "out" / "train_masks.npy")[..., 0]


def test_estimate_named_segments_map_without_a_label_map_and_frames_go_by_position(tmp_path):
    hu, labels, sources = series(tmp_path)
    write_seg(tmp_path / "seg.dcm", sources[1:3], labels[1:3])
    # Reverse the frames and their per-frame positions: placement must follow the positions, not the order.
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    count, size = int(seg.NumberOfFrames), H * W
    bits = unpack_bits(seg.PixelData)[: count * size].reshape(count, size)
    seg.PixelData = pack_bits(bits[::-1].ravel())
    seg.PerFrameFunctionalGroupsSequence = list(seg.PerFrameFunctionalGroupsSequence)[::-1]
    seg.save_as(tmp_path / "reversed.dcm")
    rows = [
        {"image": "ct", "mask": "reversed.dcm", "z_mm": 15.0},
        {"image": "ct", "mask": "seg.dcm", "slice_index": 1},
        {"image": "ct/IM0003.dcm", "mask": "seg.dcm"},
    ]
    result = prepare(tmp_path, rows)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(masks(tmp_path), labels[[2, 1, 2]])
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "train_images.npy")[..., 0], hu[[2, 1, 2]])


def test_fractional_seg_is_thresholded_at_one_half_and_segment_labels_map_by_name(tmp_path):
    _, labels, sources = series(tmp_path, seed=1, orientation=(1.0, 0.0, 0.0, 0.0, -1.0, 0.0))
    fractions = np.where(np.random.default_rng(2).random((H, W)) < 0.5, 0.4, 0.6)[None]
    names = ("Skeletal muscle", "SAT", "VAT")
    write_seg(tmp_path / "seg.dcm", sources[2:3], labels[2:3], names=names, fractions=fractions)
    rows = [{"image": "ct", "mask": "seg.dcm", "slice_index": 2}]
    assert_user_error(prepare(tmp_path, rows), "row 1", "seg.dcm", "'Skeletal muscle'", "--label-map")
    result = prepare(tmp_path, rows, "--label-map", "muscle=Skeletal muscle subcutaneous_fat=SAT visceral_fat=VAT")
    assert result.exit_code == 0, result.output
    # highdicom stores fractions in 8 bits (0.6 -> 153/255); 0.4 is below one half either way.
    np.testing.assert_array_equal(masks(tmp_path)[0], np.where(fractions[0] >= 0.5, labels[2], 0))


def test_seg_of_another_series_empty_segments_and_truncated_files(tmp_path):
    _, labels, sources = series(tmp_path, seed=3)
    other = write_series(tmp_path / "other", np.zeros((1, H, W), np.int16), Z_MM[1:2])
    write_seg(tmp_path / "other.dcm", other, labels[1:2])
    rows = [{"image": "ct", "mask": "other.dcm", "slice_index": 1}]
    assert_user_error(prepare(tmp_path, rows), "row 1", "other.dcm", "references series", sources[0].SeriesInstanceUID)
    # A segment with no pixel at all is read as absent, with a warning line; the arrays hold the rest.
    no_fat = np.where(labels[1:2] == 3, 0, labels[1:2])
    write_seg(tmp_path / "seg.dcm", sources[1:2], no_fat)
    rows = [{"image": "ct", "mask": "seg.dcm", "slice_index": 1}]
    result = prepare(tmp_path, rows)
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "segment 3 'visceral fat' is empty" in result.stderr
    np.testing.assert_array_equal(masks(tmp_path)[0], no_fat[0])
    data = (tmp_path / "seg.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 40])
    rows = [{"image": "ct", "mask": "cut.dcm", "slice_index": 1}]
    result = prepare(tmp_path, rows, "--overwrite")
    assert_user_error(result, "row 1", "cut.dcm", "cannot read DICOM SEG")
    assert sum(line.startswith("error:") for line in result.stderr.splitlines()) == 1
    rows = [{"image": "ct", "mask": "seg.dcm", "slice_index": 3}]
    assert_user_error(prepare(tmp_path, rows, "--overwrite"), "row 1", "seg.dcm", "another slice")
    np.testing.assert_array_equal(masks(tmp_path)[0], no_fat[0])  # refusals leave the earlier output as it was


def test_a_series_with_a_gap_places_the_seg_on_each_slice_where_it_is(tmp_path):
    rng = np.random.default_rng(5)
    z_mm = [10.0, 12.5, 17.5, 20.0]  # 15.0 is missing: the slices are not evenly spaced
    hu = rng.integers(-1000, 1000, size=(len(z_mm), H, W)).astype(np.int16)
    labels = rng.integers(0, 4, size=(len(z_mm), H, W)).astype(np.uint8)
    sources = write_series(tmp_path / "ct", hu, z_mm, orientation=FEET_FIRST, head_first=False)
    write_seg(tmp_path / "seg.dcm", sources[1:3], labels[1:3])
    rows = [{"image": "ct", "mask": "seg.dcm", "z_mm": 17.5}, {"image": "ct", "mask": "seg.dcm", "slice_index": 1}]
    result = prepare(tmp_path, rows)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(masks(tmp_path), labels[[2, 1]])
