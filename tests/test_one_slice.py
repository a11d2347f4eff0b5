"""A one-slice volume (`estimate --min-slices 1`): slice selection is skipped and results.csv says so."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
from test_estimate_cli import FakeModels, write_series

from bodycomp_cli.estimate.inputs import collect_inputs
from bodycomp_cli.estimate.qc import QcSettings, qc_failure
from bodycomp_cli.estimate.run import EstimateOptions, run_estimate
from bodycomp_cli.io.volumes import read_volume


class CountingModels(FakeModels):
    def __init__(self) -> None:
        super().__init__()
        self.selection_calls = 0

    def slice_outputs(self, hu_volume: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
        self.selection_calls += 1
        return super().slice_outputs(hu_volume, z_mm)


def test_qc_passes_a_one_slice_volume_when_allowed(tmp_path: Path) -> None:
    write_series(tmp_path / "one.npz", n_slices=1)
    volume = read_volume(tmp_path / "one.npz")
    assert qc_failure(volume, QcSettings(min_slices=1)) is None
    assert qc_failure(volume, QcSettings(min_slices=2)) == "1 slice, fewer than the minimum 2"


def test_one_slice_is_segmented_with_selection_skipped(tmp_path: Path) -> None:
    write_series(tmp_path / "one.npz", n_slices=1)
    write_series(tmp_path / "many.npz", n_slices=30)
    models = CountingModels()
    options = EstimateOptions(save_masks=True, show_progress=False, qc=QcSettings(min_slices=1))
    summary = run_estimate(
        collect_inputs([tmp_path / "one.npz", tmp_path / "many.npz"]), models, tmp_path / "o", options
    )
    assert summary.estimated == ["one", "many"] and summary.slices == 31
    assert models.selection_calls == 1  # the selection model saw only the 30-slice series
    assert models.segmented == [1, 1]
    results = pd.read_csv(tmp_path / "o" / "results.csv")
    assert list(results.columns[:3]) == ["series", "slice_selection", "n_slices"]
    one, many = results.iloc[0], results.iloc[1]
    assert one["slice_selection"] == "skipped (one slice)" and many["slice_selection"] == "model"
    assert one["L3_slice_index"] == 0 and one["L3_z_mm"] == 0.0
    assert np.isnan(one["L3_zero_crossings"]) and many["L3_zero_crossings"] == 1
    assert one["L3_muscle_area_cm2"] == pytest.approx(40 * 0.25 / 100)
    document = json.loads((tmp_path / "o" / "results.json").read_text())
    assert document["series"][0]["slice_selection"] == "skipped (one slice)"
    assert document["series"][0]["levels"]["L3"]["zero_crossings"] is None
    assert np.load(tmp_path / "o" / "masks" / "one_L3.npy").shape == (16, 16)
    preview = iio.imread(tmp_path / "o" / "previews" / "one_L3.png")
    assert preview.ndim == 3 and preview.shape[1] > preview.shape[0]
