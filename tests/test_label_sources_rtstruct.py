"""prepare-seg masks from an RTSTRUCT written by rt-utils on a pydicom series, rasterised back on the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from conftest import assert_user_error, invoke
from label_files import write_rtstruct, write_series

H = W = 16
Z_MM = [10.0, 12.5, 15.0]
FEET_FIRST = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def prepare(tmp_path: Path, rows: list[dict], *extra: str):
    pd.DataFrame([{**row, "split": "train"} for row in rows]).to_csv(tmp_path / "m.csv", index=False)
    return invoke(["prepare-seg", tmp_path / "m.csv", tmp_path / "out", "--size", str(W), *extra])


def shapes() -> dict[str, np.ndarray]:
    """Display Z x H x W ROI masks on slice 1 only: a rectangle, a ring (a contour with a hole) and an L shape."""
    rois = {name: np.zeros((len(Z_MM), H, W), dtype=bool) for name in ("Psoas", "SAT", "VAT")}
    rois["Psoas"][1, 2:6, 1:4] = True
    rois["SAT"][1, 8:15, 1:10] = True
    rois["SAT"][1, 10:13, 3:8] = False  # the hole: rt-utils writes it as a second contour
    rois["VAT"][1, 2:8, 8:14] = True
    rois["VAT"][1, 2:4, 12:14] = False  # an L shape: the polygon has a concave corner
    return rois


def test_rtstruct_rois_rasterise_back_exactly_on_the_display_grid(tmp_path):
    hu = np.random.default_rng(0).integers(-1000, 1000, size=(len(Z_MM), H, W)).astype(np.int16)
    write_series(tmp_path / "ct", hu, Z_MM, orientation=FEET_FIRST, head_first=False, square_pixels=True)
    rois = shapes()
    write_rtstruct(tmp_path / "rt.dcm", tmp_path / "ct", rois, Z_MM)
    rows = [{"image": "ct", "mask": "rt.dcm", "z_mm": 12.5}]
    assert_user_error(prepare(tmp_path, rows), "row 1", "rt.dcm", "'Psoas'")
    label_map = "muscle=Psoas subcutaneous_fat=SAT visceral_fat=VAT"
    result = prepare(tmp_path, rows, "--label-map", label_map)
    assert result.exit_code == 0, result.output
    expected = (rois["Psoas"][1] * 1 + rois["SAT"][1] * 2 + rois["VAT"][1] * 3).astype(np.uint8)
    # Contours through the boundary pixels' centres, filled by OpenCV: these shapes come back pixel for pixel.
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "train_masks.npy")[0, :, :, 0], expected)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "train_images.npy")[0, :, :, 0], hu[1])
    # A slice without any contour is not annotated, and an RTSTRUCT of another series is refused.
    rows = [{"image": "ct", "mask": "rt.dcm", "slice_index": 0}]
    assert_user_error(prepare(tmp_path, rows, "--label-map", label_map, "--overwrite"), "row 1", "another slice")
    write_series(tmp_path / "other", hu, Z_MM, square_pixels=True)
    write_rtstruct(tmp_path / "other.dcm", tmp_path / "other", rois, Z_MM)
    rows = [{"image": "ct", "mask": "other.dcm", "slice_index": 1}]
    result = prepare(tmp_path, rows, "--label-map", label_map, "--overwrite")
    assert_user_error(result, "row 1", "other.dcm", "references series")


def test_rtstruct_on_non_square_pixels_is_refused(tmp_path):
    write_series(tmp_path / "ct", np.zeros((len(Z_MM), H, W), np.int16), Z_MM)  # 0.7 x 0.9 mm pixels
    write_rtstruct(tmp_path / "rt.dcm", tmp_path / "ct", shapes(), Z_MM)
    rows = [{"image": "ct", "mask": "rt.dcm", "slice_index": 1}]
    result = prepare(tmp_path, rows, "--label-map", "muscle=Psoas subcutaneous_fat=SAT visceral_fat=VAT")
    assert_user_error(result, "row 1", "rt.dcm", "square pixels")
    assert not (tmp_path / "out").exists()
