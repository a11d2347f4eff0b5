"""Measures over a run of slices: every slice segmented in batches, tissue pixels counted as they come.

Used for the whole-vertebra means (`--per-vertebra`, vertebra.py) and the volumes between two levels
(`--volume`, volumes.py). Labels are not kept: each batch is segmented, gated by --hu-ranges as the
level's own slice is, counted and dropped, so a 300-slice range costs the memory of one batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bodycomp_cli.estimate.muscle_quality import gate_labels

RANGE_BATCH = 16  # slices segmented per call: the predictor batches inside, this sets the progress steps


@dataclass
class TissueTally:
    """Per tissue: the pixels labelled with it over `slices` slices, and the sum of their HU."""

    tissues: list[str]
    slices: int = 0
    pixels: dict[str, int] = field(default_factory=dict)
    hu_sum: dict[str, float] = field(default_factory=dict)

    def add(self, hu: np.ndarray, labels: np.ndarray) -> None:
        for label, tissue in enumerate(self.tissues, start=1):
            inside = labels == label
            self.pixels[tissue] = self.pixels.get(tissue, 0) + int(inside.sum())
            self.hu_sum[tissue] = self.hu_sum.get(tissue, 0.0) + float(hu[inside].astype(np.float64).sum())
        self.slices += len(labels)

    def mean_hu(self, tissue: str) -> float | None:
        """The mean HU of every pixel of the tissue over the run (None when it has none)."""
        count = self.pixels.get(tissue, 0)
        return self.hu_sum[tissue] / count if count else None


def tally_slices(
    hu: np.ndarray,
    indices: Sequence[int],
    segment: Callable[[np.ndarray], np.ndarray],
    classes: Sequence[str],
    hu_ranges: str,
    advance: Callable[[int, int], None] | None = None,
) -> TissueTally:
    """Segment the slices `hu[indices]` RANGE_BATCH at a time and count each tissue's pixels and HU.

    segment: N x H x W HU -> N x H x W labels (classes' order, background 0); advance(done, total) is called
    after each batch (a progress bar). Example:
    tally_slices(volume.hu, range(10, 40), lambda s: models.segment("L3", s), models.classes("L3"), "none")
    """
    tally = TissueTally(list(classes[1:]))
    indices = list(indices)
    for start in range(0, len(indices), RANGE_BATCH):
        batch = np.asarray(hu[indices[start : start + RANGE_BATCH]])
        labels = gate_labels(batch, segment(batch), classes, hu_ranges)
        tally.add(batch, labels)
        if advance is not None:
            advance(tally.slices, len(indices))
    return tally


def pixel_cm2(pixel_spacing: tuple[float, float] | None) -> float | None:
    """cm² per pixel: row mm x column mm / 100 (None without a spacing)."""
    return pixel_spacing[0] * pixel_spacing[1] / 100.0 if pixel_spacing else None


def slice_step_mm(z_mm: np.ndarray) -> float | None:
    """The series' slice step: the median distance between consecutive slice positions (None for one slice)."""
    z = np.sort(np.asarray(z_mm, dtype=np.float64))
    return float(np.median(np.diff(z))) if len(z) > 1 else None


@contextlib.contextmanager
def progress_steps(progress: Any, description: str) -> Iterator[Callable[[int, int], None] | None]:
    """A bar on a rich Progress while a range is segmented (slices done of the total; removed when done)."""
    if progress is None:
        yield None
        return
    task = progress.add_task(description, total=None)
    try:
        yield lambda done, total: progress.update(task, completed=done, total=total)
    finally:
        progress.remove_task(task)
