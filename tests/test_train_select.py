"""train-select end to end on tiny generated PNG data, plus every refusal."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_user_error, invoke
from helpers_train import make_select_data

torch.set_num_threads(1)  # shared two-core machine: avoid OpenMP oversubscription

FAST = ["--arch", "resnet10t", "--image-size", "32", "-b", "4", "--workers", "0", "--steps-per-epoch", "2"]


def test_multi_level_with_blank_offsets_writes_every_artifact(tmp_path):
    data = make_select_data(tmp_path / "data", levels=("T5", "L3"), blank_every=3)
    models = tmp_path / "models"
    result = invoke(["train-select", data, models, "-a", "sel", "-e", "2", "-L", "T5", "L3", *FAST, "--no-series-head"])
    assert result.exit_code == 0, result.output + str(result.exception)
    run = models / "sel"
    assert {"config.json", "checkpoint_last.pt", "checkpoint_best.pt", "history.csv", "curves.png"} <= {
        p.name for p in run.iterdir()
    }
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "slice_selection" and config["levels"] == ["T5", "L3"]
    assert config["threshold"] == 10.0 and config["image_size"] == 32 and config["arch"] == "resnet10t"
    assert config["window"] == {"level": 40.0, "width": 400.0}
    rows = pd.read_csv(run / "history.csv")
    assert list(rows.columns) == [
        "epoch", "train_loss", "val_loss", "val_mae_mm_T5", "val_mae_mm_L3", "val_selection_error_mm_T5",
        "val_selection_error_mm_L3", "val_error_mm", "lr", "seconds",
    ]  # fmt: skip
    assert rows[["val_loss", "val_mae_mm_T5", "val_mae_mm_L3", "val_error_mm"]].notna().all().all()
    # "best" is the mean over levels of the selection error (the meta CSVs have series and z_mm)
    last = rows.iloc[-1]
    expected = (last["val_selection_error_mm_T5"] + last["val_selection_error_mm_L3"]) / 2
    assert last["val_error_mm"] == pytest.approx(expected)

    from bodycomp_cli.tasks import load_predictor

    outputs = load_predictor(run, which="last").outputs(np.zeros((5, 48, 48), np.int16))
    assert outputs.shape == (5, 2) and ((outputs > 0) & (outputs < 1)).all()


def test_single_level_plain_zoffset_column(tmp_path):
    data = make_select_data(tmp_path / "data", plain_column=True, n_series=(2, 1), slices=8)
    (data / "meta" / "val.csv").write_text(
        pd.read_csv(data / "meta" / "val.csv").drop(columns=["series", "z_mm"]).to_csv(index=False)
    )
    result = invoke(["train-select", data, tmp_path / "m", "-a", "one", "-e", "1", "--quiet", *FAST])
    assert result.exit_code == 0, result.output + str(result.exception)
    rows = pd.read_csv(tmp_path / "m" / "one" / "history.csv")
    # no series/z_mm in val.csv: no selection error, so "best" falls back to the MAE near the level
    assert "val_selection_error_mm_L3" not in rows.columns
    assert rows["val_error_mm"].iloc[0] == pytest.approx(rows["val_mae_mm_L3"].iloc[0])


def _edit_csv(path, edit):
    frame = pd.read_csv(path, index_col=0)
    edit(frame)
    frame.to_csv(path)


def _set(frame, column, row, value):
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value


@pytest.mark.parametrize(
    ("damage", "options", "fragments"),
    [
        (lambda d: None, ["-L", "T12"], ["train.csv", "ZOffset_T12"]),
        (lambda d: _edit_csv(d / "meta/val.csv", lambda f: _set(f, "ZOffset_L3", 4, "abc")), [], ["val.csv", "row 4"]),
        (lambda d: (d / "images/train/000003.png").unlink(), [], ["train", "PNG"]),
        (lambda d: (d / "images/val/000002.png").rename(d / "images/val/000099.png"), [], ["000099.png"]),
        (lambda d: iio.imwrite(d / "images/val/000001.png", np.zeros((8, 8, 3), np.uint8)), [], ["000001.png", "RGB"]),
        (lambda d: (d / "images/train/000000.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken"), [], ["000000.png"]),
        (lambda d: (d / "meta/train.csv").unlink(), [], ["train.csv", "not found"]),
        (lambda d: None, ["--arch", "densenet12"], ["densenet12", "densenet121"]),
        (lambda d: None, ["--threshold", "0"], ["--threshold"]),
        (lambda d: None, ["-b", "0"], ["--batch-size 0"]),
        (lambda d: None, ["-g", "3"], ["-g/--gpus 3", "visible"]),
    ],
)
def test_refusals_leave_nothing_behind(tmp_path, damage, options, fragments):
    if "-g" in options and torch.cuda.device_count() >= 3:
        pytest.skip("this machine has GPUs")
    data = make_select_data(tmp_path / "data", n_series=(1, 1), slices=6)
    damage(data)
    models = tmp_path / "models"
    assert_user_error(invoke(["train-select", data, models, "-a", "x", "-e", "1", *FAST, *options]), *fragments)
    assert not (models / "x").exists()
