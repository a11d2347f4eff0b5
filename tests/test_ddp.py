"""DDP through torchrun: two CPU processes (gloo) write one set of run files with the single-process metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import invoke
from helpers_train import make_select_data

torch.set_num_threads(1)

# ConvNeXt normalises per sample (LayerNorm, no BatchNorm), so two ranks with half batches compute exactly
# the gradients of one process with the whole batch: the histories must agree to float rounding.
OPTIONS = ["-e", "2", "--arch", "convnext_atto", "--image-size", "32", "-b", "4", "--workers", "0"]
OPTIONS += ["--steps-per-epoch", "2", "--deterministic", "--quiet"]


def test_torchrun_two_cpu_processes_match_one_process(tmp_path):
    data = make_select_data(tmp_path / "data", n_series=(2, 2), slices=8)
    models = tmp_path / "models"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "bodycomp_cli", "train-select", str(data), str(models), "-a", "ddp", *OPTIONS]
    assert command.count("-e") == 1
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr

    run = models / "ddp"
    assert sorted(p.name for p in models.iterdir()) == ["ddp"]
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint_best.pt", "checkpoint_last.pt", "config.json", "curves.png", "history.csv", "series_head.json",
        "series_head.pt", "tensorboard",
    ]  # fmt: skip
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1  # rank 0's only
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2 and "DDP" in config["devices"] and "gloo" in config["devices"]

    single = invoke(["train-select", data, models, "-a", "single", *OPTIONS])
    assert single.exit_code == 0, single.output
    ddp_rows = pd.read_csv(run / "history.csv").drop(columns="seconds")
    single_rows = pd.read_csv(models / "single" / "history.csv").drop(columns="seconds")
    assert list(ddp_rows.columns) == list(single_rows.columns)
    for column in ddp_rows.columns:
        assert ddp_rows[column].tolist() == pytest.approx(single_rows[column].tolist(), rel=1e-4, abs=1e-6), column

    # --resume under torchrun continues the same run folder: one more epoch, earlier rows untouched
    more = [*command[: command.index("-e")], "-e", "3", *command[command.index("-e") + 2 :], "--resume"]
    done = subprocess.run(more, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = pd.read_csv(run / "history.csv").drop(columns="seconds")
    assert resumed["epoch"].tolist() == [1, 2, 3]
    pd.testing.assert_frame_equal(resumed.iloc[:2], ddp_rows)
    assert torch.load(run / "checkpoint_last.pt", weights_only=False)["epoch"] == 3


# train-seg through the typed function, made per-sample where it is per-batch: every BatchNorm becomes a GroupNorm
# (BatchNorm on the CPU cannot be synchronised: SyncBatchNorm needs GPUs), and the Dice loss is averaged over
# samples (smp's DiceLoss pools a batch, so half batches give other losses). The rest (loaders, DDP, the uneven
# validation shards and their reduction) is train-seg's own.
SEG_SCRIPT = """
import sys
from pathlib import Path

import torch

from bodycomp_cli.engine.config import EngineConfig
from bodycomp_cli.tasks.segmentation import SegmentationSettings, SegmentationTask, train_segmentation

torch.set_num_threads(1)
build_model = SegmentationTask.build_model


def per_sample_norm(module):
    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            setattr(module, name, torch.nn.GroupNorm(1, child.num_features))
        else:
            per_sample_norm(child)
    return module


def per_sample_loss(self, outputs, batch):
    outputs, masks = outputs.float(), batch["mask"]
    dice = torch.stack([self.dice_loss(o[None], m[None]) for o, m in zip(outputs, masks)]).mean()
    return dice + self.ce_loss(outputs, masks)


SegmentationTask.build_model = lambda self: per_sample_norm(build_model(self))
SegmentationTask.loss = per_sample_loss
data, models, name = sys.argv[1:4]
engine = EngineConfig(epochs=2, batch_size=4, steps_per_epoch=2, workers=0, deterministic=True, quiet=True)
train_segmentation(Path(data), Path(models), SegmentationSettings(encoder="resnet18", image_size=32), engine, name)
"""


def test_torchrun_train_seg_two_cpu_processes_match_one_process(tmp_path):
    from helpers_train import make_seg_data

    data = make_seg_data(tmp_path / "data", n_train=8, n_val=5, size=32)  # 5: validation shards of 3 and 2
    script = tmp_path / "train_seg.py"
    script.write_text(SEG_SCRIPT)
    models = tmp_path / "models"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run([*command, str(script), str(data), str(models), "ddp"], env=env, capture_output=True,
                          text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    single = subprocess.run([sys.executable, str(script), str(data), str(models), "single"], env=env,
                            capture_output=True, text=True, timeout=180)  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]

    config = json.loads((models / "ddp" / "config.json").read_text())
    assert config["world_size"] == 2 and "gloo" in config["devices"]
    ddp_rows = pd.read_csv(models / "ddp" / "history.csv").drop(columns="seconds")
    single_rows = pd.read_csv(models / "single" / "history.csv").drop(columns="seconds")
    assert list(ddp_rows.columns) == list(single_rows.columns) and ddp_rows["epoch"].tolist() == [1, 2]
    assert "val_dice_mean" in ddp_rows.columns
    for column in ddp_rows.columns:
        assert ddp_rows[column].tolist() == pytest.approx(single_rows[column].tolist(), rel=1e-4, abs=1e-6), column


# Rank 0's background writer fails (a full disk): rank 0 stops at its next step with one line, and torchrun stops
# rank 1, which would otherwise wait in an all-reduce until the process group's timeout (30 minutes).
FAILING_WRITER_SCRIPT = """
import os
import sys

import bodycomp_cli.engine.writer as writer
from bodycomp_cli.cli import main


def disk_full(path, checkpoint):
    raise OSError(28, "No space left on device")


if os.environ["RANK"] == "0":
    writer.save_checkpoint = disk_full
sys.argv = ["bodycomp", *sys.argv[1:]]
main()
"""


def test_torchrun_a_failed_save_on_rank_0_stops_every_rank(tmp_path):
    data = make_select_data(tmp_path / "data", n_series=(2, 2), slices=8)
    script = tmp_path / "failing_writer.py"
    script.write_text(FAILING_WRITER_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    command += ["train-select", str(data), str(tmp_path / "models"), "-a", "full", *OPTIONS]
    command[command.index("-e") + 1] = "50"  # far more than it may run
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode != 0
    assert "saving the run files failed (OSError: [Errno 28] No space left on device); training stopped" in done.stderr
    assert not (tmp_path / "models" / "full" / "history.csv").exists()
