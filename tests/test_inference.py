import json
from pathlib import Path

import numpy as np
import torch

from bodycomp_cli.core import amp
from bodycomp_cli.core.amp import AmpPolicy
from bodycomp_cli.core.runconfig import CONFIG_FILE, RunConfig
from bodycomp_cli.engine.checkpoint import save_checkpoint
from bodycomp_cli.inference.placement import choose_placement
from bodycomp_cli.inference.run import LoadedRun, load_run
from bodycomp_cli.tasks.segmentation import SegmentationPredictor
from bodycomp_cli.tasks.slice_selection import build_selection_model


class _CheckerboardSegmenter(torch.nn.Module):
    """Logits whose argmax is a 4-class checkerboard at the model's input size, whatever the image."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        labels = (rows + 2 * cols) % 4
        return torch.nn.functional.one_hot(labels, 4).permute(2, 0, 1).float().expand(n, 4, h, w)


def _run(image_size: int, batch_size: int = 16) -> SegmentationPredictor:
    config = RunConfig("segmentation", "checkerboard", image_size, classes=["background", "muscle"])
    run = LoadedRun(_CheckerboardSegmenter(), config, Path("run"), choose_placement(0))
    return SegmentationPredictor(run, batch_size=batch_size)


def test_segmentation_labels_resized_back_with_nearest():
    hu = np.zeros((3, 64, 64), dtype=np.int16)
    labels = _run(32, batch_size=2).segment(hu)
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    small = ((rows + 2 * cols) % 4).astype(np.uint8)
    expected = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    assert labels.shape == (3, 64, 64) and labels.dtype == np.uint8
    assert all(np.array_equal(label, expected) for label in labels)


def test_segmentation_at_model_size_is_not_resized():
    labels = _run(32).segment(np.zeros((1, 32, 32), dtype=np.int16))
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    assert np.array_equal(labels[0], ((rows + 2 * cols) % 4).astype(np.uint8))


def test_no_amp_reaches_the_inference_setup(monkeypatch):
    monkeypatch.setattr(amp, "cpu_has_bf16", lambda: True)  # a CPU where --amp would autocast
    assert choose_placement(0, True).amp == AmpPolicy("cpu", torch.bfloat16)
    setup = choose_placement(0, False)
    assert setup.amp == AmpPolicy("cpu", None) and setup.device == "cpu"


def test_load_run_puts_the_model_in_channels_last_with_the_same_outputs(tmp_path):
    config = RunConfig("slice_selection", "resnet10t", 32, levels=["L3"], threshold=10.0)
    model = build_selection_model(config).eval()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / CONFIG_FILE).write_text(json.dumps(config.to_dict()))
    save_checkpoint(run_dir / "checkpoint_best.pt", {"model": model.state_dict()})
    run = load_run(run_dir, build_selection_model)
    kernels = [p for p in run.model.parameters() if p.dim() == 4 and p.shape[1] > 1]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    assert not all(p.is_contiguous() for p in kernels)
    images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(run.model(images), model(images), atol=1e-5)


class _ThresholdSegmenter(torch.nn.Module):
    """Muscle wherever the windowed image is above one half: labels that follow the pixels wherever they move."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(images), 20.0 * (images - 0.5)], dim=1)


def test_shift_agreement_is_high_for_labels_that_follow_the_pixels_and_low_for_labels_tied_to_the_grid():
    hu = np.full((2, 32, 32), -1000, dtype=np.int16)
    hu[0, 8:24, 10:22] = 1000  # a block of "muscle"; slice 1 holds none
    config = RunConfig("segmentation", "threshold", 32, classes=["background", "muscle"])
    follows = SegmentationPredictor(LoadedRun(_ThresholdSegmenter(), config, Path("run"), choose_placement(0)))
    agreement = follows.shift_agreement(hu)
    assert agreement.shape == (2,) and agreement[0] > 0.9 and np.isnan(agreement[1])  # slice 1: no tissue either way
    tied = _run(32).shift_agreement(hu[:1])  # the checkerboard stays on the grid: moved back, it lands a pixel off
    assert tied[0] < 0.5
