"""--low-memory: activation checkpointing changes what is kept for backward, never the numbers trained."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from conftest import invoke
from helpers_train import make_seg_data

from bodycomp_cli.engine.memory import enable_low_memory

torch.set_num_threads(1)


def one_step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)  # the same dropout and drop-path draws for both models
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return model.state_dict()


def saved_for_backward_bytes(model: torch.nn.Module, images: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward pass of one forward (what checkpointing exists to shrink)."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    model = copy.deepcopy(model)  # leave the caller's BatchNorm statistics as they were
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(images).sum()
    return total


@pytest.mark.parametrize(
    "arch, encoder", [("unet", "resnet34"), ("fpn", "resnet18"), ("deeplabv3plus", "resnet18"), ("unet", "tu-resnet18")]
)
def test_smp_models_train_identically_and_keep_under_half_for_backward(arch, encoder):
    torch.manual_seed(0)
    plain = smp.create_model(arch, encoder_name=encoder, encoder_weights=None, in_channels=1, classes=4)
    low = copy.deepcopy(plain)
    enable_low_memory(low)
    assert any(type(m).__name__.startswith("Recomputed") for m in low.modules())
    images, labels = torch.rand(2, 1, 64, 64), torch.randint(0, 4, (2, 64, 64))

    kept_plain, kept_low = saved_for_backward_bytes(plain, images), saved_for_backward_bytes(low, images)
    assert kept_low < 0.5 * kept_plain, (kept_low, kept_plain)

    after_plain, after_low = one_step(plain, images, labels), one_step(low, images, labels)
    assert list(after_plain) == list(after_low)  # same state_dict keys: checkpoints load into a plain model
    for key in after_plain:  # weights and BatchNorm running statistics (not counted twice by the recompute)
        assert torch.equal(after_plain[key], after_low[key]), key

    low.eval()
    plain.eval()
    with torch.no_grad():
        assert torch.equal(plain(images), low(images))


def test_data_parallel_replicas_keep_checkpointing():
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=4)
    enable_low_memory(model)
    block = model.decoder.blocks[0]
    # DataParallel builds each replica with type(module).__new__; the switched class must carry over.
    replica = block._replicate_for_data_parallel()
    assert type(replica) is type(block) and type(block).__name__.startswith("Recomputed")


def test_timm_models_use_timms_own_checkpointing():
    torch.manual_seed(0)
    plain = timm.create_model("densenet121", pretrained=False, in_chans=1, num_classes=1)
    low = copy.deepcopy(plain)
    enable_low_memory(low)
    assert any(getattr(m, "grad_checkpointing", False) for m in low.modules())
    images = torch.rand(2, 1, 64, 64)
    # timm recomputes each dense layer's norm-relu-conv bottleneck only: 52% of the plain figure here.
    assert saved_for_backward_bytes(low, images) < 0.6 * saved_for_backward_bytes(plain, images)

    def step(model):
        torch.manual_seed(1)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)
        loss = model(images).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return dict(model.named_parameters())

    after_plain, after_low = step(plain), step(low)
    for name, value in after_plain.items():
        torch.testing.assert_close(after_low[name], value, rtol=0, atol=1e-6)


def test_train_seg_low_memory_gives_the_same_history(tmp_path):
    data = make_seg_data(tmp_path / "seg", n_train=8, n_val=4, size=32)
    fast = ["--encoder", "resnet18", "--image-size", "32", "-b", "4", "--workers", "0", "-e", "2", "--deterministic"]
    histories = []
    for name, extra in (("plain", []), ("low", ["--low-memory"])):
        result = invoke(["train-seg", data, tmp_path / "models", "-a", name, "--quiet", *fast, *extra])
        assert result.exit_code == 0, result.output + str(result.exception)
        config = json.loads((tmp_path / "models" / name / "config.json").read_text())
        assert config["low_memory"] is bool(extra)
        histories.append(pd.read_csv(tmp_path / "models" / name / "history.csv").drop(columns=["seconds"]))
    pd.testing.assert_frame_equal(histories[0], histories[1])
