"""Apply a trained segmentation run: raw HU slices in, tissue labels out (the run's window and size)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bodycomp_cli.core.preprocess import resize_labels, segmentation_input
from bodycomp_cli.inference.run import LoadedRun


class SegmentationPredictor:
    """A loaded segmentation run. Example: SegmentationPredictor(run).segment(volume.hu[i])"""

    def __init__(self, run: LoadedRun, batch_size: int = 16) -> None:
        self.run, self.batch_size = run, batch_size

    @property
    def classes(self) -> list[str]:
        return list(self.run.config.classes)

    def segment(self, hu_slices: np.ndarray) -> np.ndarray:
        """N x H x W raw HU -> N x H x W uint8 labels at the input size (window as trained, argmax of logits)."""
        return self.segment_with_margin(hu_slices, margin=False)[0]

    @torch.no_grad()
    def segment_with_margin(self, hu_slices: np.ndarray, margin: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """As segment(), and per pixel the margin between the top two class probabilities (softmax), N x H x W
        float32 at the input size: the model's own uncertainty, which estimate's review reads."""
        run = self.run
        hu_slices = np.asarray(hu_slices)
        if hu_slices.ndim == 2:
            hu_slices = hu_slices[None]
        window, size = run.config.window, run.config.image_size
        labels = np.empty(hu_slices.shape, dtype=np.uint8)
        margins = np.empty(hu_slices.shape, dtype=np.float32) if margin else None
        for start in range(0, len(hu_slices), self.batch_size):
            batch = hu_slices[start : start + self.batch_size]
            images = segmentation_input(batch, window.level, window.width, size)
            with run.autocast():
                logits = run.model(images.to(run.device))
            # Labels at the model's size go back to the slice's size with nearest, so every output pixel carries
            # a label the model chose; nearest-exact keeps pixel centres aligned.
            predicted = resize_labels(logits.argmax(dim=1).to(torch.uint8), hu_slices.shape[-2:])
            labels[start : start + self.batch_size] = predicted.cpu().numpy()
            if margins is not None:
                top2 = torch.softmax(logits.float(), dim=1).topk(2, dim=1).values
                gap = (top2[:, 0] - top2[:, 1]).unsqueeze(1)
                resized = torch.nn.functional.interpolate(gap, size=hu_slices.shape[-2:], mode="nearest-exact")
                margins[start : start + self.batch_size] = resized[:, 0].cpu().numpy()
        return labels, margins

    def score(self, data_dir: Path, split: str, output_dir: Path, options: Any, progress: Any = None) -> dict:
        """evaluate: Dice and area error on prepare-seg arrays, worst-slice overlays in output_dir."""
        from bodycomp_cli.tasks.segmentation.scoring import evaluate_segmentation

        return evaluate_segmentation(
            self.classes, self.segment, data_dir, split, output_dir, self.batch_size, options.pixel_spacing_mm, progress
        )
