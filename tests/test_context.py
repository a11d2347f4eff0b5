"""train-select --context-mm: the slices above and below join each slice as channels, in training and inference."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_user_error, invoke
from helpers_train import make_select_data

from bodycomp_cli.core.preprocess import context_rows
from bodycomp_cli.data.slices import SliceSelectionDataset, read_gray_png, validate_slice_data
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.tasks import load_predictor

torch.set_num_threads(1)

FAST = ["--arch", "resnet10t", "--image-size", "32", "-b", "4", "--workers", "0", "--steps-per-epoch", "2", "--quiet"]


def test_context_rows_pick_the_nearest_slice_of_the_same_series():
    # Series "a" listed out of z order (2.5 mm apart), "b" 3 mm apart, "c" a single slice.
    series = np.array(["a", "a", "b", "a", "a", "b", "c", "a"])
    z_mm = np.array([5.0, 0.0, 100.0, 10.0, 2.5, 103.0, 50.0, 7.5])
    rows = context_rows(series, z_mm, 5.0)
    expected = {
        1: (1, 1, 0),  # z 0: nothing below, so itself; above: z 5 (row 0)
        4: (1, 4, 7),  # z 2.5: below -2.5 -> z 0; above 7.5 -> row 7
        0: (1, 0, 3),  # z 5: 0 and 10
        7: (4, 7, 3),  # z 7.5: 2.5 and 12.5 -> the top slice z 10
        3: (0, 3, 3),  # z 10: 5 and 15 -> itself
        2: (2, 2, 5),  # z 100 in b: 95 -> itself, 105 -> 103 (nearest)
        5: (2, 5, 5),
        6: (6, 6, 6),
    }
    for row, neighbours in expected.items():
        assert tuple(rows[row]) == neighbours, row


def test_dataset_stacks_the_neighbours_pngs_as_channels(tmp_path):
    data = make_select_data(tmp_path / "data", n_series=(2, 1), slices=6, size=32, spacing_mm=2.5)
    split = validate_slice_data(data, ["L3"])["train"]
    neighbours = context_rows(split.meta.series, split.meta.z_mm, 5.0)
    item = SliceSelectionDataset(split, 32, 10.0, None, neighbours)[7]  # second series, second slice
    assert item["image"].shape == (3, 32, 32)
    assert neighbours[7].tolist() == [6, 7, 9]  # z 2.5: z 0 below (clamped), z 7.5 above
    for channel, row in enumerate(neighbours[7]):
        png = read_gray_png(split.image_dir / f"{row:06d}.png").astype(np.float32) * np.float32(1 / 255)
        np.testing.assert_array_equal(item["image"][channel].numpy(), png)


def test_train_evaluate_and_predict_with_context(tmp_path):
    data = make_select_data(tmp_path / "data", n_series=(3, 2), slices=10, size=32, spacing_mm=2.5)
    models = tmp_path / "models"
    result = invoke(["train-select", data, models, "-a", "ctx", "-e", "1", "--context-mm", "5", *FAST])
    assert result.exit_code == 0, result.output + str(result.exception)
    run_dir = models / "ctx"
    assert json.loads((run_dir / "config.json").read_text())["context_mm"] == 5.0

    predictor = load_predictor(run_dir, batch_size=4)
    assert predictor.run.model.conv1[0].in_channels == 3  # resnet10t's deep stem takes the 3 slices
    hu = np.random.default_rng(0).integers(-200, 200, (10, 32, 32)).astype(np.int16)
    z_mm = 2.5 * np.arange(10)
    outputs = predictor.outputs(hu, z_mm)
    assert outputs.shape == (10, 1) and np.all((outputs > 0) & (outputs < 1))
    # Batching never changes a slice's neighbours: the same outputs one slice at a time.
    one_at_a_time = load_predictor(run_dir, batch_size=1)
    np.testing.assert_allclose(one_at_a_time.outputs(hu, z_mm), outputs, atol=1e-6)
    with pytest.raises(BodycompError, match="--context-mm 5; give z_mm per slice"):
        predictor.outputs(hu)

    evaluated = invoke(["evaluate", run_dir, data, "--split", "val", "-o", tmp_path / "eval"])
    assert evaluated.exit_code == 0, evaluated.output + str(evaluated.exception)
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["levels"]["L3"]["selection"]["n_series"] == 2


def test_context_needs_series_and_z_columns(tmp_path):
    data = make_select_data(tmp_path / "data", n_series=(2, 1), slices=6, size=32)
    meta = data / "meta" / "train.csv"
    pd.read_csv(meta, index_col=0).drop(columns=["z_mm"]).to_csv(meta)
    result = invoke(["train-select", data, tmp_path / "models", "-a", "x", "-e", "1", "--context-mm", "5", *FAST])
    assert_user_error(result, "train.csv", "--context-mm needs a z_mm column")
    assert not (tmp_path / "models").exists()
