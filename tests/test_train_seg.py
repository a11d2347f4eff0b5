"""train-seg end to end on tiny generated data (32 px, a few steps), plus every refusal."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_user_error, invoke
from helpers_train import make_seg_data

# Several engineers share two cores: one torch thread per test process avoids OpenMP oversubscription.
torch.set_num_threads(1)

FAST = ["--encoder", "resnet18", "--image-size", "32", "-b", "4", "--workers", "0", "--steps-per-epoch", "2"]


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    return make_seg_data(tmp_path_factory.mktemp("seg"), n_train=12, n_val=6, size=32)


def history(run_dir):
    return pd.read_csv(run_dir / "history.csv")


def test_writes_every_artifact_resumes_and_is_deterministic(seg_data, tmp_path):
    models = tmp_path / "models"
    first = invoke(["train-seg", seg_data, models, "-a", "one", "-e", "2", "--deterministic", *FAST])
    assert first.exit_code == 0, first.output + str(first.exception)
    run = models / "one"
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "checkpoint_last.pt", "checkpoint_best.pt", "history.csv", "curves.png"} <= names
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "segmentation"
    assert config["window"] == {"level": 40.0, "width": 400.0}
    assert config["classes"] == ["background", "muscle", "subcutaneous_fat", "visceral_fat"]
    assert (config["arch"], config["encoder"], config["image_size"]) == ("unet", "resnet18", 32)
    assert config["batch_size"] == 4 and config["epochs"] == 2 and config["versions"]["torch"]

    rows = history(run)
    assert list(rows.columns) == [
        "epoch", "train_loss", "val_loss", "val_dice_muscle", "val_dice_subcutaneous_fat",
        "val_dice_visceral_fat", "val_dice_mean", "lr", "seconds",
    ]  # fmt: skip
    assert rows["epoch"].tolist() == [1, 2]
    # cosine over 2 epochs: the first epoch runs at the full rate, the second at half of it
    assert rows["lr"].tolist() == pytest.approx([1e-3, 5e-4])

    checkpoint = torch.load(run / "checkpoint_last.pt", weights_only=False)
    assert checkpoint["task"] == "segmentation" and checkpoint["epoch"] == 2
    assert {"optimizer", "scheduler", "scaler", "rng", "config", "history", "best"} <= set(checkpoint)
    assert not any(key.startswith("module.") for key in checkpoint["model"])
    kernels = [value for value in checkpoint["model"].values() if value.dim() == 4 and min(value.shape[1:3]) > 1]
    assert kernels and all(kernel.is_contiguous(memory_format=torch.channels_last) for kernel in kernels)
    assert not any(kernel.is_contiguous() for kernel in kernels)  # trained in channels_last (issue 15)

    # The same settings again give the same history (seconds is wall-clock time, so it is left out).
    again = invoke(["train-seg", seg_data, models, "-a", "two", "-e", "2", "--deterministic", *FAST])
    assert again.exit_code == 0, again.output
    pd.testing.assert_frame_equal(rows.drop(columns="seconds"), history(models / "two").drop(columns="seconds"))

    # Without --resume, a run folder holding checkpoints is refused; with it, -e 3 adds exactly one epoch.
    assert_user_error(invoke(["train-seg", seg_data, models, "-a", "one", "-e", "3", *FAST]), "--resume")
    resumed = invoke(["train-seg", seg_data, models, "-a", "one", "-e", "3", "--deterministic", "--resume", *FAST])
    assert resumed.exit_code == 0, resumed.output
    extended = history(run)
    assert extended["epoch"].tolist() == [1, 2, 3]
    pd.testing.assert_frame_equal(extended.iloc[:2], rows)
    assert torch.load(run / "checkpoint_last.pt", weights_only=False)["epoch"] == 3


def test_learning_is_real_and_inference_matches(seg_data, tmp_path):
    from bodycomp_cli.tasks import load_predictor

    result = invoke(["train-seg", seg_data, tmp_path, "-a", "learn", "-e", "8", *FAST[:-1], "6", "--quiet"])
    assert result.exit_code == 0, result.output
    rows = history(tmp_path / "learn")
    first, best = rows["val_dice_mean"].iloc[0], rows["val_dice_mean"].max()
    assert best > first + 0.2, rows["val_dice_mean"].tolist()
    assert rows["train_loss"].iloc[-1] < 0.7 * rows["train_loss"].iloc[0]

    # checkpoint_best.pt applied through the inference contract reproduces the best epoch's Dice
    predictor = load_predictor(tmp_path / "learn", batch_size=4)
    images = np.load(seg_data / "val_images.npy")[..., 0]
    masks = np.load(seg_data / "val_masks.npy")[..., 0]
    labels = predictor.segment(images)
    assert labels.shape == masks.shape and labels.dtype == np.uint8
    dices = []
    for label in (1, 2, 3):
        for truth, guess in zip(masks == label, labels == label, strict=True):
            if truth.sum() + guess.sum():
                dices.append((label, 2 * (truth & guess).sum() / (truth.sum() + guess.sum())))
    mean = np.mean([np.mean([d for lab, d in dices if lab == label]) for label in (1, 2, 3)])
    assert mean == pytest.approx(best, abs=1e-6)


def test_thoracic_has_no_visceral_fat(tmp_path):
    data = make_seg_data(tmp_path / "thorax", n_train=4, n_val=2, size=32, thoracic=True)
    result = invoke(["train-seg", data, tmp_path / "m", "-a", "t", "-t", "-e", "1", "--quiet", *FAST])
    assert result.exit_code == 0, result.output
    assert "val_dice_visceral_fat" not in history(tmp_path / "m" / "t").columns
    config = json.loads((tmp_path / "m" / "t" / "config.json").read_text())
    assert config["classes"] == ["background", "muscle", "subcutaneous_fat"] and config["thoracic"] is True


def _break(data, name, array):
    np.save(data / name, array)


@pytest.mark.parametrize(
    ("damage", "options", "fragments"),
    [
        (
            lambda d: _break(d, "train_images.npy", np.zeros((12, 32, 32, 1), np.uint8)),
            [],
            ["train_images.npy", "raw HU"],
        ),
        (lambda d: _break(d, "val_masks.npy", np.full((6, 32, 32, 1), 4, np.uint8)), [], ["val_masks.npy", "label 4"]),
        (lambda d: None, ["-t"], ["train_masks.npy", "label 3", "thoracic"]),
        (
            lambda d: _break(d, "val_masks.npy", np.zeros((5, 32, 32), np.uint8)),
            [],
            ["val_masks.npy", "does not match"],
        ),
        (lambda d: (d / "val_images.npy").unlink(), [], ["val_images.npy", "not found"]),
        (
            lambda d: (d / "train_images.npy").write_bytes(b"\x93NUMPY garbage"),
            [],
            ["train_images.npy", "not a readable"],
        ),
        (lambda d: _break(d, "train_masks.npy", np.full((12, 32, 32), 0.5)), [], ["train_masks.npy", "fractions"]),
        (lambda d: None, ["-b", "0"], ["--batch-size 0"]),
        (lambda d: None, ["-l", "-1"], ["--learning-rate -1"]),
        (lambda d: None, ["--arch", "nonet"], ["nonet", "unet", "fpn"]),
        (lambda d: None, ["--encoder", "resnet9000"], ["resnet9000", "resnet34"]),
        (lambda d: None, ["-g", "2"], ["-g/--gpus 2", "visible"]),
        (lambda d: None, ["--resume"], ["nothing to resume"]),
        (lambda d: None, ["--image-size", "40"], ["--image-size 40", "multiple of 32"]),
    ],
)
def test_refusals_leave_nothing_behind(tmp_path, damage, options, fragments):
    if "-g" in options and torch.cuda.device_count() >= 2:
        pytest.skip("this machine has GPUs")
    data = make_seg_data(tmp_path / "data", n_train=12, n_val=6, size=32, seed=1)
    damage(data)
    models = tmp_path / "models"
    assert_user_error(invoke(["train-seg", data, models, "-a", "x", "-e", "1", *FAST, *options]), *fragments)
    assert not (models / "x").exists()


def tensorboard_scalars(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def test_tensorboard_events_match_history_across_a_kill_and_resume(seg_data, tmp_path):
    models, run = tmp_path / "models", tmp_path / "models" / "tb"
    base = ["train-seg", seg_data, models, "-a", "tb", "--quiet", "--deterministic", *FAST]
    assert invoke([*base, "-e", "2"]).exit_code == 0
    epoch2 = (run / "checkpoint_last.pt").read_bytes()
    assert invoke([*base, "-e", "3", "--resume"]).exit_code == 0
    # As if the process had been killed after epoch 3's events but before its checkpoint landed.
    (run / "checkpoint_last.pt").unlink()
    (run / "checkpoint_last.pt").write_bytes(epoch2)
    assert invoke([*base, "-e", "3", "--resume"]).exit_code == 0

    rows = history(run)
    assert rows["epoch"].tolist() == [1, 2, 3]
    logged = tensorboard_scalars(run, "val_loss")
    assert [step for step, _ in logged] == [1, 2, 3]  # epoch 3 once: the first attempt's event is purged
    np.testing.assert_allclose([value for _, value in logged], rows["val_loss"], rtol=1e-6)
