"""prepare-seg masks from SliceOmatic .tag files (ASCII header, form feed, one byte per stored pixel)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from conftest import assert_user_error, invoke
from label_files import write_series, write_tag

H = W = 8
Z_MM = [10.0, 12.5, 15.0]
FLIPPED_ROWS = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


def prepare(tmp_path: Path, rows: list[dict], *extra: str):
    pd.DataFrame([{**row, "split": "train"} for row in rows]).to_csv(tmp_path / "m.csv", index=False)
    return invoke(["prepare-seg", tmp_path / "m.csv", tmp_path / "out", "--size", str(W), *extra])


def alberta_tags(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.array([0, 1, 2, 5, 7], dtype=np.uint8), size=(H, W))


def test_alberta_tags_beside_their_dicom_slice_come_out_as_bodycomp_classes(tmp_path):
    hu = np.random.default_rng(0).integers(-1000, 1000, size=(len(Z_MM), H, W)).astype(np.int16)
    sources = write_series(tmp_path / "ct", hu, Z_MM, orientation=FLIPPED_ROWS, head_first=False)
    tags = alberta_tags(1)
    write_tag(tmp_path / "ct" / "IM0002.dcm.tag", sources[1], tags)
    rows = [
        {"image": "ct/IM0002.dcm", "mask": "ct/IM0002.dcm.tag"},
        {"image": "ct", "mask": "ct/IM0002.dcm.tag", "z_mm": 12.5},  # the series folder, the tag's slice named
    ]
    # TAG numbers 1 and 2 are not bodycomp's classes 1 and 2: without a label map the tag is refused.
    assert_user_error(prepare(tmp_path, rows), "row 1", "IM0002.dcm.tag", "needs --label-map")
    result = prepare(tmp_path, rows, "--label-map", "sliceomatic-alberta")
    assert result.exit_code == 0, result.output
    expected = np.select([tags == 1, tags == 2, tags == 7, tags == 5], [1, 1, 2, 3], 0).astype(np.uint8)  # IMAT: 1
    masks = np.load(tmp_path / "out" / "train_masks.npy")[..., 0]
    np.testing.assert_array_equal(masks, np.stack([expected, expected]))
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "train_images.npy")[..., 0], hu[[1, 1]])
    imat_left_out = "muscle=1 background=2 visceral_fat=5 subcutaneous_fat=7"
    result = prepare(tmp_path, rows[:1], "--label-map", imat_left_out, "--overwrite")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "train_masks.npy")[0, ..., 0], expected - (tags == 2))


def test_bad_tag_files_give_one_line_and_no_output(tmp_path):
    hu = np.zeros((len(Z_MM), H, W), dtype=np.int16)
    sources = write_series(tmp_path / "ct", hu, Z_MM)
    tags = alberta_tags(2)
    tags[0, 0] = 3  # a TAG the preset does not name
    write_tag(tmp_path / "ct" / "IM0001.dcm.tag", sources[0], tags)
    good = (tmp_path / "ct" / "IM0001.dcm.tag").read_bytes()
    (tmp_path / "cut.tag").write_bytes(good[:-5])
    write_tag(tmp_path / "small.tag", sources[0], tags[:4, :4], header_size=(4, 4))
    (tmp_path / "text.tag").write_text("x:8 y:8 no form feed")
    cases = [
        ("ct/IM0001.dcm.tag", "label 3"),
        ("cut.tag", "wrong size"),
        ("small.tag", "wrong size"),
        ("text.tag", "not a SliceOmatic tag"),
    ]
    for mask, message in cases:
        rows = [{"image": "ct/IM0001.dcm", "mask": mask}]
        result = prepare(tmp_path, rows, "--label-map", "sliceomatic-alberta")
        assert_user_error(result, "row 1", Path(mask).name, message)
        assert sum(line.startswith("error:") for line in result.stderr.splitlines()) == 1
        assert not (tmp_path / "out").exists()
    rows = [{"image": "ct/IM0002.dcm", "mask": "ct/IM0001.dcm.tag"}]  # the tag of another slice
    assert_user_error(prepare(tmp_path, rows, "--label-map", "sliceomatic-alberta"), "row 1", "another slice")
