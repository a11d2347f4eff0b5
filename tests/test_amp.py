"""The one AMP decision (core/amp.py) with faked device capabilities, and the fp16 + GradScaler branch on the CPU."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import invoke
from helpers_train import make_seg_data

from bodycomp_cli.core import amp
from bodycomp_cli.core.amp import AmpPolicy, choose_amp
from bodycomp_cli.engine import inference
from bodycomp_cli.estimate.models import inference_setup

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
    assert choose_amp(CUDA, enabled=False) == AmpPolicy("cuda", None)
    name = "bf16" if dtype == torch.bfloat16 else "fp16"
    assert policy.describe() == f"{name} autocast" + (" + GradScaler" if scaler else "")
    assert policy.describe(training=False) == f"{name} autocast"


def test_cpu_stays_full_precision_unless_asked_and_capable(monkeypatch):
    monkeypatch.setattr(amp, "cpu_has_bf16", lambda: True)
    assert choose_amp("cpu") == AmpPolicy("cpu", None)  # the default: CPU runs stay exact
    assert choose_amp("cpu", cpu=True) == AmpPolicy("cpu", torch.bfloat16)
    assert choose_amp("cpu", enabled=False, cpu=True) == AmpPolicy("cpu", None)
    monkeypatch.setattr(amp, "cpu_has_bf16", lambda: False)  # an AVX2-only CPU: bf16 would be emulated
    assert choose_amp("cpu", cpu=True) == AmpPolicy("cpu", None)
    assert choose_amp("meta") == AmpPolicy("meta", None)
    assert isinstance(amp.cpu_has_bf16(), bool)  # the real probe runs on this machine


def test_trainer_inference_and_estimate_follow_the_one_decision(gpu_with_capability):
    gpu_with_capability((7, 0))  # a V100
    assert inference_setup(None).description == "1 GPU (cuda:0), fp16 autocast"
    assert inference_setup(None, amp=False).description == "1 GPU (cuda:0)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that CUDA autocast is unavailable on this machine
        context = inference._autocast(SimpleNamespace(device=CUDA, amp=True))
    assert context.fast_dtype == torch.float16
    gpu_with_capability((8, 0))
    assert inference_setup(None).description == "1 GPU (cuda:0), bf16 autocast"


def test_fp16_and_grad_scaler_branch_trains_on_the_cpu(tmp_path, monkeypatch):
    """The branch a V100 or T4 takes: fp16 autocast, scaled loss, scaler state saved in the checkpoint."""
    policy = AmpPolicy("cpu", torch.float16)
    monkeypatch.setattr("bodycomp_cli.engine.trainer.choose_amp", lambda *args, **kwargs: policy)
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
