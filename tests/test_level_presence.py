"""A level outside the scanned z-range: blank measures, `not in scan`, no slice, preview or mask (issue 24)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_estimate_cli import THRESHOLD_MM, FakeModels, write_series

from bodycomp_cli.core.metrics import outputs_from_offsets
from bodycomp_cli.estimate.inputs import collect_inputs
from bodycomp_cli.estimate.level_presence import NOT_IN_SCAN, level_presence, predicted_level_z_mm
from bodycomp_cli.estimate.run import EstimateOptions, run_estimate

Z = np.arange(30) * 4.0  # 0..116 mm


def head_outputs(level_z: float) -> np.ndarray:
    """A series head's outputs for a level at level_z, as the predictor gives them (float32)."""
    return outputs_from_offsets((Z - level_z)[:, None], THRESHOLD_MM).astype(np.float32)[:, 0]


@pytest.mark.parametrize("level_z", [-300.0, -150.0, -25.0, 145.0, 400.0])
def test_a_level_beyond_either_end_is_not_in_the_scan(level_z: float) -> None:
    presence = level_presence(head_outputs(level_z), Z, THRESHOLD_MM)
    assert not presence.in_scan and presence.reason == NOT_IN_SCAN
    assert (presence.level_z_mm < -THRESHOLD_MM) == (level_z < 0)


@pytest.mark.parametrize("level_z", [-8.0, 0.0, 50.0, 116.0, 124.0])
def test_a_level_inside_or_within_the_margin_is_in_the_scan(level_z: float) -> None:
    presence = level_presence(head_outputs(level_z), Z, THRESHOLD_MM)
    assert presence.in_scan and presence.reason == ""
    assert presence.level_z_mm == pytest.approx(level_z, abs=0.5)


def test_a_flat_curve_gives_a_bound_beyond_the_nearer_end() -> None:
    bound = THRESHOLD_MM * np.log(0.95 / 0.05)
    assert predicted_level_z_mm(np.ones(30), Z, THRESHOLD_MM) == pytest.approx(-bound)
    assert predicted_level_z_mm(np.zeros(30), Z, THRESHOLD_MM) == pytest.approx(116.0 + bound)


def test_the_margin_is_a_setting() -> None:
    assert not level_presence(head_outputs(-8.0), Z, THRESHOLD_MM, margin_mm=5.0).in_scan
    assert level_presence(head_outputs(-8.0), Z, THRESHOLD_MM, margin_mm=10.0).in_scan


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="one prediction per slice"):
        predicted_level_z_mm(np.ones(3), Z, THRESHOLD_MM)


class TwoLevelModels(FakeModels):
    """L3 at 50 mm as FakeModels; T12 at 300 mm, above every slice of the test series."""

    levels = ["L3", "T12"]

    def slice_outputs(self, hu_volume: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
        z = hu_volume[:, 0, 0].astype(np.float64)
        return np.stack([1 / (1 + np.exp(-(z - level) / THRESHOLD_MM)) for level in (50.0, 300.0)], axis=1)


def test_estimate_leaves_an_absent_level_blank_and_says_why(tmp_path: Path) -> None:
    write_series(tmp_path / "s1.npz")
    out = tmp_path / "out"
    options = EstimateOptions(save_masks=True, show_progress=False)
    models = TwoLevelModels()
    run_estimate(collect_inputs([tmp_path / "s1.npz"]), models, out, options)
    assert models.segmented == [1]  # only L3 was segmented
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert row["L3_slice_index"] == 12 and pd.isna(row["L3_reason"])
    assert row["T12_reason"] == NOT_IN_SCAN
    t12 = [column for column in row.index if column.startswith("T12_") and column != "T12_reason"]
    # the slice's 4 columns, 6 per tissue, and the clinical measures per level (issue 23): every one blank
    assert len(t12) >= 4 + 3 * 6 and row[t12].isna().all(), row[t12][row[t12].notna()]
    assert sorted(path.name for path in (out / "previews").iterdir()) == ["s1_L3.png"]
    assert sorted(path.name for path in (out / "masks").iterdir()) == ["s1_L3.npy"]
    level = json.loads((out / "results.json").read_text())["series"][0]["levels"]["T12"]
    assert level["reason"] == NOT_IN_SCAN and level["slice_index"] is None
    assert level["tissues"]["muscle"]["area_cm2"] is None
    assert "T12: not in scan" in (out / "report.html").read_text()
    # --resume reads the blank level back and writes the same files
    before = (out / "results.csv").read_text()
    run_estimate(
        collect_inputs([tmp_path / "s1.npz"]), TwoLevelModels(), out, EstimateOptions(resume=True, show_progress=False)
    )
    assert (out / "results.csv").read_text() == before
