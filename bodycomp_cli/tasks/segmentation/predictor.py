"""Apply a trained segmentation run: raw HU slices in, tissue labels out (the run's window and size)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bodycomp_cli.core.metrics import dice_summary, segmentation_counts
from bodycomp_cli.core.preprocess import resize_labels, segmentation_input
from bodycomp_cli.inference.run import LoadedRun

# In affine_grid's coordinates, which span 2 across the image: 0.06 moves it by 3 % (about 4 pixels of 128), within
# the training augmentation's shifts.
SHIFT_FRACTION = 0.06


class SegmentationPredictor:
    """A loaded segmentation run. Example: SegmentationPredictor(run).segment(volume.hu[i])"""

    def __init__(self, run: LoadedRun, batch_size: int = 16) -> None:
        self.run, self.batch_size = run, batch_size

    @property
    def classes(self) -> list[str]:
        return list(self.run.config.classes)

    def segment(self, hu_slices: np.ndarray) -> np.ndarray:
        """N x H x W raw HU -> N x H x W uint8 labels at the input size (window as trained, argmax of logits)."""
        return self.segment_with_expected_dice(hu_slices, expected=False)[0]

    @torch.no_grad()
    def segment_with_expected_dice(
        self, hu_slices: np.ndarray, expected: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """As segment(), and per slice and class the Dice the model itself expects of its labels, N x classes
        float64 (NaN where neither the labels nor the probabilities hold the class): estimate's review reads it.

        The expected Dice of class c is the soft Dice between the model's probabilities p_c and its own
        argmax mask m_c, 2 sum(p_c m_c) / (sum p_c + sum m_c): 1 when every pixel is sure, lower as more of
        the class's pixels are near a tie, and it reads the whole class, so a thin structure drawn with soft
        borders scores low where a share of uncertain pixels would not tell thin from unsure."""
        run = self.run
        hu_slices = np.asarray(hu_slices)
        if hu_slices.ndim == 2:
            hu_slices = hu_slices[None]
        window, size = run.config.window, run.config.image_size
        labels = np.empty(hu_slices.shape, dtype=np.uint8)
        dice = np.empty((len(hu_slices), len(self.classes))) if expected else None
        for start in range(0, len(hu_slices), self.batch_size):
            batch = hu_slices[start : start + self.batch_size]
            images = segmentation_input(batch, window.level, window.width, size)
            with run.autocast():
                logits = run.model(images.to(run.device))
            # Labels at the model's size go back to the slice's size with nearest, so every output pixel carries
            # a label the model chose; nearest-exact keeps pixel centres aligned.
            argmax = logits.argmax(dim=1)
            predicted = resize_labels(argmax.to(torch.uint8), hu_slices.shape[-2:])
            labels[start : start + self.batch_size] = predicted.cpu().numpy()
            if dice is not None:
                dice[start : start + self.batch_size] = expected_dice(logits, argmax).cpu().numpy()
        return labels, dice

    @torch.no_grad()
    def shift_agreement(self, hu_slices: np.ndarray, shift: float = SHIFT_FRACTION) -> np.ndarray:
        """Per slice, the lowest tissue Dice between the model's labels and its labels of the same slice moved by
        `shift` (affine_grid's coordinates: half of it is the share of the image; down-right, then up-left) and
        moved back, on the model's grid; NaN where no tissue is labelled either way. A CNN is nearly
        shift-equivariant, so labels it holds firmly stay put; labels that change when the slice moves were not
        settled by the pixels, however sure the softmax is (expected Dice reads only the softmax). estimate's
        review reads it."""
        run = self.run
        hu_slices = np.asarray(hu_slices)
        if hu_slices.ndim == 2:
            hu_slices = hu_slices[None]
        window, size = run.config.window, run.config.image_size
        lowest = np.full(len(hu_slices), np.nan)
        for start in range(0, len(hu_slices), self.batch_size):
            images = segmentation_input(hu_slices[start : start + self.batch_size], window.level, window.width, size)
            images = images.to(run.device)
            dice = []
            with run.autocast():
                labels = run.model(images).argmax(dim=1)
                for signed in (shift, -shift):
                    back = _translate(run.model(_translate(images, signed)).float().softmax(dim=1), -signed)
                    counts = segmentation_counts(labels, back.argmax(dim=1), len(self.classes))
                    dice.append(dice_summary(counts.cpu().numpy()).per_slice)
            both = np.concatenate(dice, axis=1)
            found = np.isfinite(both).any(axis=1)
            lowest[start : start + len(both)][found] = np.min(np.where(np.isfinite(both), both, np.inf)[found], axis=1)
        return lowest

    def score(self, data_dir: Path, split: str, output_dir: Path, options: Any, progress: Any = None) -> dict:
        """evaluate: Dice and area error on prepare-seg arrays, worst-slice overlays in output_dir."""
        from bodycomp_cli.tasks.segmentation.scoring import evaluate_segmentation

        return evaluate_segmentation(
            self.classes, self.segment, data_dir, split, output_dir, self.batch_size, options.pixel_spacing_mm, progress
        )


def _translate(images: torch.Tensor, fraction: float) -> torch.Tensor:
    """Move B x C x H x W images by fraction / 2 of their width and height (bilinear, edges repeated)."""
    theta = torch.tensor([[1.0, 0.0, fraction], [0.0, 1.0, fraction]], device=images.device, dtype=images.dtype)
    grid = torch.nn.functional.affine_grid(theta.expand(len(images), 2, 3), list(images.shape), align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, padding_mode="border", align_corners=False)


def expected_dice(logits: torch.Tensor, argmax: torch.Tensor) -> torch.Tensor:
    """B x C x H x W logits and their B x H x W argmax -> B x C soft Dice of the probabilities against the
    argmax masks (NaN where a class has under one pixel of either)."""
    probabilities = torch.softmax(logits.float(), dim=1)
    masks = torch.nn.functional.one_hot(argmax, probabilities.shape[1]).permute(0, 3, 1, 2).float()
    overlap = (probabilities * masks).sum(dim=(2, 3))
    total = probabilities.sum(dim=(2, 3)) + masks.sum(dim=(2, 3))
    return torch.where(total >= 1.0, 2.0 * overlap / total.clamp_min(1e-6), torch.nan).double()
