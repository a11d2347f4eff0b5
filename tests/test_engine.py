"""Engine parts on the CPU: device wrapping, samplers, schedules, augmentation, task metrics."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from helpers_train import make_seg_data
from rich.console import Console

from bodycomp_cli.core.preprocess import resize_labels, segmentation_input
from bodycomp_cli.data.augment import AffineRanges, augment_pair, warp
from bodycomp_cli.data.sampling import ShardSampler, TrainSampler
from bodycomp_cli.engine.config import schedule_factor
from bodycomp_cli.engine.devices import DeviceSetup, resolve_devices, strip_prefix, unwrap_model, wrap_model
from bodycomp_cli.engine.trainer import PROGRESS_REFRESH_S, _EpochBar
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.tasks.segmentation import SegmentationSettings, SegmentationTask
from bodycomp_cli.tasks.slice_selection import SliceSelectionSettings, SliceSelectionTask

CPU = torch.device("cpu")


def test_dataparallel_wrapping_and_prefix_round_trip():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    wrapped = wrap_model(net, DeviceSetup(CPU, n_gpus=2))
    assert isinstance(wrapped, torch.nn.DataParallel)
    state = wrapped.state_dict()
    assert all(key.startswith("module.") for key in state)
    assert unwrap_model(wrapped) is net
    fresh = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    fresh.load_state_dict(strip_prefix(state))
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(fresh.eval()(x), net.eval()(x))
    assert strip_prefix(net.state_dict()).keys() == net.state_dict().keys()  # bare weights pass unchanged
    assert wrap_model(net, DeviceSetup(CPU, n_gpus=0)) is net


def test_resolve_devices(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert resolve_devices(None, visible=0).device == CPU
    assert resolve_devices(None, visible=2).device == torch.device("cuda", 0)
    assert resolve_devices(2, visible=2).n_gpus == 2
    with pytest.raises(BodycompError, match="only 1 GPU"):
        resolve_devices(2, visible=1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    setup = resolve_devices(None, visible=0)
    assert (setup.distributed, setup.rank, setup.world_size, setup.is_main) == (True, 1, 2, False)
    with pytest.raises(BodycompError, match="torchrun"):
        resolve_devices(1, visible=2)


def test_train_sampler_is_a_function_of_seed_and_epoch_and_splits_global_batches():
    single = TrainSampler(10, batch_size=4, seed=3)
    single.set_epoch(2)
    items = list(single)
    assert len(items) == len(single) == 8  # two full batches, the partial third dropped
    single.set_epoch(2)
    assert list(single) == items
    single.set_epoch(3)
    assert list(single) != items
    ranks = [TrainSampler(10, batch_size=4, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(2)
    zero, one = list(ranks[0]), list(ranks[1])
    # each global batch of 4 is rank 0's two items then rank 1's two, the same (index, seed) pairs as one process
    assert zero[:2] + one[:2] + zero[2:] + one[2:] == items
    steps = TrainSampler(5, batch_size=4, seed=0, steps_per_epoch=3)
    indices = [i for i, _ in steps]
    assert len(indices) == 12 and sorted(indices[:5]) == list(range(5))
    assert list(ShardSampler(5, rank=1, world_size=2)) == [1, 3]


def test_schedules():
    step = schedule_factor("step", 8)
    # the original's rule: e > 4 -> x0.1, e > 6 -> x0.01 for 8 epochs (it dropped one epoch later than we did)
    assert [step(e) for e in range(8)] == [1.0] * 5 + [0.1] * 2 + [0.01]
    assert [schedule_factor("step", 10)(e) for e in range(10)] == [1.0] * 6 + [0.1] * 2 + [0.01] * 2
    cosine = schedule_factor("cosine", 4)
    assert [cosine(e) for e in range(5)] == pytest.approx([1.0, 0.853553, 0.5, 0.146447, 0.0], abs=1e-6)


def test_augmentation_keeps_labels_and_identity_is_exact():
    labels = torch.zeros(32, 32, dtype=torch.int64)
    labels[8:20, 5:25] = 3
    labels[10:12, 10:12] = 1
    image = labels[None].float() / 3
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    assert torch.allclose(warp(image, identity, "bilinear"), image, atol=1e-6)
    warped_image, warped = augment_pair(
        image, labels, AffineRanges(10, 0.1, 0.1, 0.0), torch.Generator().manual_seed(1)
    )
    assert set(warped.unique().tolist()) <= {0, 1, 3} and warped.dtype == torch.int64
    assert not torch.equal(warped, labels)
    assert warped_image.shape == (1, 32, 32)
    assert set(resize_labels(labels, 16).unique().tolist()) <= {0, 1, 3}


def test_dice_skips_classes_absent_from_truth_and_prediction():
    task = SegmentationTask(SegmentationSettings(encoder="resnet18", image_size=32))
    masks = torch.zeros(2, 4, 4, dtype=torch.int64)
    masks[0, :2] = 1  # slice 0: muscle in the top half; slice 1: nothing but background
    logits = torch.zeros(2, 4, 4, 4)
    logits[0, 1, :1] = 5.0  # predicts muscle in the first row only: Dice 2*4/(8+4)
    logits[0, 0, 1:] = 5.0
    logits[1, 0] = 5.0
    metrics = task.finalize_metrics(task.validation_stats(logits, {"mask": masks, "index": torch.tensor([0, 1])}))
    assert metrics["val_dice_muscle"] == pytest.approx(8 / 12)
    assert metrics["val_dice_mean"] == pytest.approx(8 / 12)  # fat classes absent everywhere: skipped
    assert metrics["val_dice_visceral_fat"] != metrics["val_dice_visceral_fat"]  # NaN


def test_selection_loss_masks_blank_offsets_and_mae_inverts_the_sigmoid():
    task = SliceSelectionTask(SliceSelectionSettings(levels=["T5", "L3"], arch="resnet10t", threshold_mm=10.0))
    offsets = torch.tensor([[5.0, 0.0], [100.0, -12.0]])
    batch = {
        "offset_mm": offsets,
        "target": torch.sigmoid(offsets / 10.0),
        "valid": torch.tensor([[1.0, 0.0], [1.0, 1.0]]),
        "index": torch.tensor([0, 1]),
    }
    predicted_mm = torch.tensor([[7.0, 50.0], [0.0, -10.0]])
    logits = predicted_mm / 10.0  # sigmoid(logit) = sigmoid(offset / threshold)
    expected_l1 = (
        (torch.sigmoid(torch.tensor(0.7)) - torch.sigmoid(torch.tensor(0.5))).abs()
        + (torch.sigmoid(torch.tensor(0.0)) - torch.sigmoid(torch.tensor(10.0))).abs()
        + (torch.sigmoid(torch.tensor(-1.0)) - torch.sigmoid(torch.tensor(-1.2))).abs()
    ) / 3
    assert float(task.loss(logits, batch)) == pytest.approx(float(expected_l1), rel=1e-5)
    metrics = task.finalize_metrics(task.validation_stats(logits, batch))
    # 100 mm is beyond 3 thresholds and the L3 value of row 0 is blank: one slice per level counts
    assert metrics["val_mae_mm_T5"] == pytest.approx(2.0, abs=1e-4)
    assert metrics["val_mae_mm_L3"] == pytest.approx(2.0, abs=1e-4)
    assert metrics["val_error_mm"] == pytest.approx(2.0, abs=1e-4)


def test_segmentation_dataset_windows_raw_hu(tmp_path):
    data = make_seg_data(tmp_path, n_train=2, n_val=2, size=32)
    task = SegmentationTask(SegmentationSettings(encoder="resnet18", image_size=32), data)
    _, val = task.datasets()
    item = val[0]
    hu = np.load(data / "val_images.npy")[0, ..., 0]
    # bit-identical to the model input inference makes of the same HU (one preprocessing for both)
    assert torch.equal(item["image"], segmentation_input(hu[None], 40.0, 400.0, 32)[0])
    assert item["image"][0, 0, 0] == 0.0 and float(item["image"].max()) == pytest.approx((150 + 160) / 400, abs=0.15)
    assert torch.equal(item["mask"], torch.from_numpy(np.load(data / "val_masks.npy")[0, ..., 0].astype(np.int64)))


def test_progress_bar_redraws_only_as_often_as_the_loss_is_read():
    # rich's default is 10 redraws a second, each about 1 ms of rendering under the GIL in a terminal (issue 15
    # goal 5): the bar redraws at the rate its loss and speed fields change.
    with open(os.devnull, "w") as screen:
        bar = _EpochBar(Console(file=screen, force_terminal=True), "epoch 1/1", 3)
        with bar as (progress, task):
            assert progress.live.auto_refresh and progress.live.refresh_per_second == 1 / PROGRESS_REFRESH_S == 2
            progress.update(task, advance=3)
        assert progress.finished


def test_epoch_line_says_n_a_for_a_metric_no_val_series_has():
    from types import SimpleNamespace

    from bodycomp_cli.engine.trainer import Trainer

    trainer = SimpleNamespace(
        engine=SimpleNamespace(epochs=3), train_speed=12.0, setup=SimpleNamespace(device=torch.device("cpu"))
    )
    row = {"epoch": 2, "val_mae_mm_L3": 1.23456, "val_mae_mm_L5": float("nan"), "lr": 1e-3, "seconds": 2.5}
    line = Trainer._summary(trainer, row, improved=True)
    assert line == (
        "epoch 2/3  val_mae_mm_L3 1.2346  val_mae_mm_L5 n/a  lr 1.00e-03  2.5 s  train 12.0 samples/s  (best)"
    )
