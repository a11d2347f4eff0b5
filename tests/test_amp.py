"""The one AMP decision (core/amp.py) with faked device capabilities, and the fp16 + GradScaler branch on the CPU."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import invoke
from helpers_train import make_seg_data

from bodycomp_cli.core import amp
from bodycomp_cli.core.amp import AmpPolicy, choose_amp
from bodycomp_cli.core.preprocess import selection_input
from bodycomp_cli.core.runconfig import RunConfig
from bodycomp_cli.engine import trainer
from bodycomp_cli.estimate.evaluate import EvaluateOptions, evaluate_run
from bodycomp_cli.inference.placement import choose_placement
from bodycomp_cli.inference.run import LoadedRun
from bodycomp_cli.tasks.slice_selection import SliceSelectionPredictor

torch.set_num_threads(1)
CUDA = torch.device("cuda", 0)


@pytest.fixture
def gpu_with_capability(monkeypatch):
    """Pretend cuda:0 is a GPU of the given compute capability, one that torch says emulates bf16."""

    def fake(capability: tuple[int, int]) -> None:
        monkeypatch.setattr(amp, "cuda_capability", lambda device: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # as on a V100 or T4
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    return fake


@pytest.mark.parametrize(
    ("capability", "dtype", "scaler"),
    [((6, 0), torch.float16, True), ((7, 0), torch.float16, True), ((7, 5), torch.float16, True),
     ((8, 0), torch.bfloat16, False), ((8, 6), torch.bfloat16, False), ((9, 0), torch.bfloat16, False)],
)  # fmt: skip
def test_bf16_only_from_compute_capability_8(gpu_with_capability, capability, dtype, scaler):
    gpu_with_capability(capability)
    policy = choose_amp(CUDA)
    assert (policy.device_type, policy.dtype, policy.needs_scaler) == ("cuda", dtype, scaler)
    assert choose_amp(CUDA, False) == AmpPolicy("cuda", None)
    name = "bf16" if dtype == torch.bfloat16 else "fp16"
    assert policy.describe() == f"{name} autocast" + (" + GradScaler" if scaler else "")
    assert policy.describe(training=False) == f"{name} autocast"


def test_cpu_stays_full_precision_unless_asked_and_capable(monkeypatch):
    monkeypatch.setattr(amp, "cpu_has_bf16", lambda: True)
    assert choose_amp("cpu") == AmpPolicy("cpu", None)  # the default: CPU runs stay exact
    assert choose_amp("cpu", True) == AmpPolicy("cpu", torch.bfloat16)
    assert choose_amp("cpu", False) == AmpPolicy("cpu", None)
    monkeypatch.setattr(amp, "cpu_has_bf16", lambda: False)  # an AVX2-only CPU: bf16 would be emulated
    assert choose_amp("cpu", True) == AmpPolicy("cpu", None)
    assert choose_amp("meta") == AmpPolicy("meta", None)
    assert isinstance(amp.cpu_has_bf16(), bool)  # the real probe runs on this machine


def test_trainer_inference_and_estimate_follow_the_one_decision(gpu_with_capability):
    gpu_with_capability((7, 0))  # a V100
    assert choose_placement(None).description == "1 GPU (cuda:0), fp16 autocast"
    assert choose_placement(None, False).description == "1 GPU (cuda:0)"
    config = RunConfig("segmentation", "unet", 32, classes=["background", "muscle"])
    run = LoadedRun(torch.nn.Identity(), config, Path("r"), choose_placement(None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that CUDA autocast is unavailable on this machine
        context = run.autocast()
    assert context.fast_dtype == torch.float16
    gpu_with_capability((8, 0))
    assert choose_placement(None).description == "1 GPU (cuda:0), bf16 autocast"


def test_fp16_and_grad_scaler_branch_trains_on_the_cpu(tmp_path, monkeypatch):
    """The branch a V100 or T4 takes: fp16 autocast, scaled loss, scaler state saved in the checkpoint."""
    policy = AmpPolicy("cpu", torch.float16)

    # run_training's one decision goes to config.json (the real CPU choice, below); the trainer gets fp16.
    def fp16_trainer(task, model, setup, engine, run_dir, config, amp, console=None):
        return trainer.Trainer(task, model, setup, engine, run_dir, config, policy, console)

    monkeypatch.setattr("bodycomp_cli.engine.run.Trainer", fp16_trainer)
    data = make_seg_data(tmp_path / "data", n_train=4, n_val=2, size=32)
    models = tmp_path / "models"
    options = ["--encoder", "resnet18", "--image-size", "32", "-b", "2", "--workers", "0", "-e", "1", "--quiet"]
    result = invoke(["train-seg", data, models, "-a", "fp16", "--steps-per-epoch", "1", *options])
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = pd.read_csv(models / "fp16" / "history.csv")
    assert rows["epoch"].tolist() == [1]
    assert rows[["train_loss", "val_loss", "val_dice_mean"]].notna().all().all()
    assert rows["train_loss"].between(0.1, 5).all()
    checkpoint = torch.load(models / "fp16" / "checkpoint_last.pt", weights_only=False)
    scaler = checkpoint["scaler"]
    assert scaler is not None and 0 < scaler["scale"] <= 2.0**16 and scaler["_growth_tracker"] >= 0
    assert all(value.dtype == torch.float32 for value in checkpoint["model"].values() if value.is_floating_point())
    assert json.loads((models / "fp16" / "config.json").read_text())["amp"] is False  # the real CPU choice


# ----- inference on the CPU (issue 15) -------------------------------------------------------------------------
class _RecordsPrecision(torch.nn.Module):
    """A one-level selection model that records, per batch, the CPU autocast dtype it ran under (None: none)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.fc = torch.nn.Linear(2, 1)
        self.seen: list[torch.dtype | None] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return self.fc(self.conv(images).mean(dim=(2, 3)))


def _selection_run(amp: bool) -> SliceSelectionPredictor:
    config = RunConfig("slice_selection", "records", 16, levels=["L3"], threshold=10.0)
    run = LoadedRun(_RecordsPrecision(), config, Path("r"), choose_placement(0, amp))  # --amp or --no-amp
    return SliceSelectionPredictor(run, batch_size=4)


def test_cpu_inference_autocasts_bf16_where_the_cpu_has_it_and_no_amp_is_exact_fp32(monkeypatch):
    monkeypatch.setattr(amp, "cpu_has_bf16", lambda: True)  # as on AVX512-BF16 or AMX, on any test machine
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 20, 20), dtype=np.uint8)
    fast = _selection_run(amp=True)
    fast_outputs = fast.outputs_8bit(pixels)
    assert fast.run.model.seen == [torch.bfloat16, torch.bfloat16]  # --amp: two batches in bf16
    exact = _selection_run(amp=False)  # --no-amp
    outputs = exact.outputs_8bit(pixels)
    assert exact.run.model.seen == [None, None]
    with torch.no_grad():  # exactly the fp32 model on the same input, no autocast anywhere
        expected = torch.sigmoid(exact.run.model(selection_input(pixels[:, None], 16))).numpy()
    assert outputs.dtype == np.float32 and np.array_equal(outputs, expected)
    assert not np.array_equal(fast_outputs, outputs) and np.allclose(fast_outputs, outputs, atol=0.02)
    assert choose_placement(0, True).description == "the CPU, bf16 autocast"
    assert choose_placement(0, False).description == "the CPU"
    assert choose_placement(0).description == "the CPU"  # the default: the CPU stays exact
    monkeypatch.setattr(amp, "cpu_has_bf16", lambda: False)  # an AVX2-only CPU: bf16 would be emulated, slowly
    plain = _selection_run(amp=True)
    plain.batch_size = 8
    plain.outputs_8bit(pixels)
    assert plain.run.model.seen == [None] and choose_placement(0, True).description == "the CPU"


def test_estimate_and_evaluate_cli_autocast_on_a_bf16_cpu_unless_no_amp(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(amp, "cpu_has_bf16", lambda: True)
    models = ["--select-model", trained["select"], "--seg-model", trained["seg"], "-g", "0"]
    results = {}
    for flag in ("--amp", "--no-amp"):
        out = tmp_path / flag
        result = invoke(["estimate", trained["series_csv"], *models, "-o", out, "--no-previews", flag])
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert ("inference on the CPU, bf16 autocast" in result.output) is (flag == "--amp"), result.output
        results[flag] = pd.read_csv(out / "results.csv")
    assert results["--amp"]["series"].tolist() == results["--no-amp"]["series"].tolist()
    # evaluate follows the same one rule: exact on the CPU unless --amp, whatever the run was validated with...
    report = evaluate_run(trained["seg"], trained["root"] / "seg_data", tmp_path / "e1", EvaluateOptions(gpus=0))
    assert (report["device"], report["autocast"]) == ("cpu", None)
    config = json.loads((trained["seg"] / "config.json").read_text())
    run = tmp_path / "seg_amp"
    shutil.copytree(trained["seg"], run)
    (run / "config.json").write_text(json.dumps({**config, "amp": True}))  # ...a run validated under autocast too
    report = evaluate_run(run, trained["root"] / "seg_data", tmp_path / "e3", EvaluateOptions(gpus=0))
    assert (report["device"], report["autocast"]) == ("cpu", None)
    report = evaluate_run(run, trained["root"] / "seg_data", tmp_path / "e2", EvaluateOptions(gpus=0, amp=True))
    assert (report["device"], report["autocast"]) == ("cpu", "bfloat16")
