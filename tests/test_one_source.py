"""One source of truth: validation (history.csv) and `evaluate` (evaluation.json) report the same numbers for the
same model on the same data, and read the meta CSVs with one reader."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import invoke
from helpers_train import make_seg_data, make_select_data

from bodycomp_cli.core.metacsv import read_meta_csv
from bodycomp_cli.core.metrics import LOGIT_CLAMP, near_level_mae, offsets_from_outputs
from bodycomp_cli.estimate.evaluate import EvaluateOptions, evaluate_run
from bodycomp_cli.tasks.slice_selection import SliceSelectionSettings, SliceSelectionTask

torch.set_num_threads(1)  # shared two-core machine: avoid OpenMP oversubscription

TISSUES = ("muscle", "subcutaneous_fat", "visceral_fat")


def last_history_row(run: Path) -> dict[str, float]:
    """history.csv's last row, parsed with float() (repr round-trips exactly; pandas' parser may not)."""
    with open(run / "history.csv", newline="") as handle:
        row = list(csv.DictReader(handle))[-1]
    return {key: float(value) for key, value in row.items()}


def evaluate_val(run: Path, data: Path, batch_size: int) -> dict:
    options = EvaluateOptions(split="val", batch_size=batch_size, show_progress=False)
    return evaluate_run(run, data, run.parent / f"{run.name}_eval", options)


def test_segmentation_validation_dice_equals_evaluate_dice(tmp_path):
    # The model's image size is the slices' size, so validation and evaluate score the same pixels.
    data = make_seg_data(tmp_path / "data", n_train=4, n_val=4, size=32)
    models = tmp_path / "models"
    args = ["train-seg", data, models, "-a", "seg", "-e", "1", "-b", "4", "--encoder", "resnet18"]
    result = invoke([*args, "--image-size", "32", "--workers", "0", "--steps-per-epoch", "2", "--quiet"])
    assert result.exit_code == 0, result.output + str(result.exception)
    history = last_history_row(models / "seg")
    report = evaluate_val(models / "seg", data, batch_size=4)
    checked = 0
    for tissue in TISSUES:
        dice = report["tissues"][tissue]["dice_mean"]
        if dice is None:
            assert np.isnan(history[f"val_dice_{tissue}"])
        else:
            assert history[f"val_dice_{tissue}"] == dice
            checked += 1
    assert checked >= 1


def test_selection_validation_metrics_equal_evaluate_metrics(tmp_path):
    # The per-slice model: the CNN's validation is what evaluate reports.
    data = make_select_data(tmp_path / "data", n_series=(2, 2), slices=8, size=32)
    models = tmp_path / "models"
    args = ["train-select", data, models, "-a", "sel", "-e", "1", "-b", "16", "--arch", "resnet10t"]
    options = ["--image-size", "32", "--workers", "0", "--steps-per-epoch", "1", "--quiet"]
    result = invoke([*args, *options, "--no-series-head"])
    assert result.exit_code == 0, result.output + str(result.exception)
    history = last_history_row(models / "sel")
    level = evaluate_val(models / "sel", data, batch_size=16)["levels"]["L3"]
    assert history["val_mae_mm_L3"] == level["mae_mm"]
    assert history["val_selection_error_mm_L3"] == level["selection"]["median_mm"]
    assert level["selection"]["n_series"] == 2


def test_series_head_validation_equals_evaluate(tmp_path):
    # With a series head, train-select's report of the head on the val series (series_head.json) is what
    # evaluate finds on them: the same offsets through the same slice-choice rule.
    data = make_select_data(tmp_path / "data", n_series=(3, 3), slices=10, size=32)
    models = tmp_path / "models"
    args = ["train-select", data, models, "-a", "head", "-e", "1", "-b", "16", "--arch", "resnet10t"]
    result = invoke([*args, "--image-size", "32", "--workers", "0", "--steps-per-epoch", "1", "--quiet"])
    assert result.exit_code == 0, result.output + str(result.exception)
    reported = json.loads((models / "head" / "series_head.json").read_text())["levels"]["L3"]
    selection = evaluate_val(models / "head", data, batch_size=16)["levels"]["L3"]["selection"]
    assert selection["n_series"] == reported["n_series"] == 3
    for key in ("median_mm", "mean_mm", "within_10mm"):
        assert selection[key] == pytest.approx(reported[key], abs=1e-9), key


def test_validation_and_evaluate_invert_saturated_outputs_with_one_clamp():
    # An output of exactly 1 at the level: validation's MAE is evaluate's, T * logit(1 - LOGIT_CLAMP).
    task = SliceSelectionTask(SliceSelectionSettings(levels=["L3"], arch="resnet10t", threshold_mm=10.0))
    batch = {
        "offset_mm": torch.tensor([[0.0], [5.0]], dtype=torch.float64),
        "target": torch.tensor([[0.5], [0.6]]),
        "valid": torch.ones(2, 1),
        "index": torch.tensor([0, 1]),
    }
    logits = torch.tensor([[40.0], [0.0]])  # sigmoid(40) is 1.0 in float32
    metrics = task.finalize_metrics(task.validation_stats(logits, batch))
    outputs = torch.sigmoid(logits).double().numpy()[:, 0]
    expected, _ = near_level_mae(outputs, np.array([0.0, 5.0]), 10.0)
    assert metrics["val_mae_mm_L3"] == expected
    saturated = float(offsets_from_outputs(np.array([1.0]), 10.0)[0])
    assert saturated == pytest.approx(10.0 * np.log((1 - LOGIT_CLAMP) / LOGIT_CLAMP))
    assert expected == pytest.approx((saturated + 5.0) / 2)


def test_meta_csv_without_the_index_column_reads_as_with_it(tmp_path):
    data = make_select_data(tmp_path / "data", n_series=(1, 2), slices=6, size=32)
    written = data / "meta" / "val.csv"  # as prepare-slices writes it: pandas' unnamed index column first
    bare = tmp_path / "bare.csv"
    pd.read_csv(written, index_col=0).to_csv(bare, index=False)  # the same table, made by hand
    assert bare.read_text().splitlines()[0] == "series,z_mm,ZOffset_L3"
    with_index, without = read_meta_csv(written, ["L3"]), read_meta_csv(bare, ["L3"])
    assert list(with_index.frame.columns) == list(without.frame.columns) == ["series", "z_mm", "ZOffset_L3"]
    np.testing.assert_array_equal(with_index.offsets_mm, without.offsets_mm)
    assert with_index.series.tolist() == without.series.tolist() == ["val0"] * 6 + ["val1"] * 6
    np.testing.assert_array_equal(with_index.z_mm, without.z_mm)


def test_evaluate_reads_a_meta_csv_without_the_index_column(tmp_path):
    # Before one reader, evaluate read meta CSVs with index_col=0: without the unnamed column, `series`
    # became the index, and the selection error silently disappeared from evaluation.json.
    data = make_select_data(tmp_path / "data", n_series=(2, 2), slices=8, size=32)
    models = tmp_path / "models"
    args = ["train-select", data, models, "-a", "sel", "-e", "1", "-b", "16", "--arch", "resnet10t"]
    assert invoke([*args, "--image-size", "32", "--workers", "0", "--steps-per-epoch", "1", "--quiet"]).exit_code == 0
    bare = tmp_path / "bare"
    shutil.copytree(data, bare)
    pd.read_csv(data / "meta" / "val.csv", index_col=0).to_csv(bare / "meta" / "val.csv", index=False)
    with_index = evaluate_val(models / "sel", data, batch_size=16)["levels"]["L3"]
    options = EvaluateOptions(split="val", batch_size=16, show_progress=False)
    without = evaluate_run(models / "sel", bare, tmp_path / "bare_eval", options)["levels"]["L3"]
    assert without["selection"] is not None and without["selection"]["n_series"] == 2
    assert without == with_index
