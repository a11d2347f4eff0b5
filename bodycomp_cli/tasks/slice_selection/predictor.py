"""Apply a trained slice-selection run: a series' slices in, each level's per-slice sigmoid outputs out.

With a series head (series_head.pt in the run folder) the CNN's pooled features of the whole series go through
the head, whose offsets in mm are given back in the CNN's output form, so the one slice-choice rule reads both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bodycomp_cli.core.metrics import outputs_from_offsets
from bodycomp_cli.core.preprocess import selection_input, volume_context_rows, window_hu
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.inference.run import LoadedRun
from bodycomp_cli.tasks.slice_selection.evidence import SelectionEvidence
from bodycomp_cli.tasks.slice_selection.outputs import output_levels, phase_columns
from bodycomp_cli.tasks.slice_selection.series_head import (
    HEAD_FILE,
    classifier_features,
    load_heads,
    predict_offsets_mm,
)


class SliceSelectionPredictor:
    """A loaded slice-selection run (and its series head, when it has one)."""

    def __init__(self, run: LoadedRun, batch_size: int = 32) -> None:
        self.run, self.batch_size = run, batch_size
        self.heads = load_heads(run.run_dir / HEAD_FILE) if run.config.series_head else None

    @property
    def levels(self) -> list[str]:
        return list(self.run.config.levels)

    @property
    def threshold_mm(self) -> float:
        return float(self.run.config.threshold)

    def outputs(self, hu_volume: np.ndarray, z_mm: np.ndarray | None = None) -> np.ndarray:
        """Z x H x W raw HU -> Z x n_levels sigmoid outputs (the model saw 8-bit windowed PNGs, so window to uint8
        with the run's window first). A --context-mm or series-head run also needs each slice's z_mm (Z,)."""
        return self.evidence(hu_volume, z_mm).outputs[:, : len(self.run.config.levels)]

    def evidence(self, hu_volume: np.ndarray, z_mm: np.ndarray | None = None) -> SelectionEvidence:
        """As outputs(), with every output level and what the per-slice CNN, the series head and the phase
        said apart (evidence.py): what estimate's review compares."""
        hu_volume, window = np.asarray(hu_volume), self.run.config.window

        def windowed(rows: np.ndarray) -> np.ndarray:
            # Batch by batch: windowing a whole volume at once would take 8 bytes (float64) per voxel.
            return window_hu(hu_volume[rows], window.level, window.width)

        return self._evidence(len(hu_volume), windowed, z_mm)

    def outputs_8bit(self, pixels: np.ndarray, z_mm: np.ndarray | None = None) -> np.ndarray:
        """Z x H x W 8-bit slices, windowed as the run's PNGs (evaluate reads those) -> Z x n_levels outputs."""
        pixels = np.asarray(pixels)
        return self._evidence(len(pixels), lambda rows: pixels[rows], z_mm).outputs[:, : len(self.run.config.levels)]

    def score(self, data_dir: Path, split: str, output_dir: Path, options: Any, progress: Any = None) -> dict:
        """evaluate: offset MAE near each level and the per-series selection error on prepare-slices data."""
        from bodycomp_cli.tasks.slice_selection.scoring import evaluate_slice_selection

        def predict(images: np.ndarray, z_mm: np.ndarray | None = None) -> np.ndarray:
            # The PNGs are the 8-bit slices the model was trained on: fed as they are, no HU round trip.
            return np.asarray(self.outputs_8bit(images, z_mm), np.float64)

        return evaluate_slice_selection(self.run.config, predict, data_dir, split, self.batch_size, progress)

    def series_features(
        self, hu_volume: np.ndarray, z_mm: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """A series-head run's per-slice CNN pass alone: the CNN's sigmoid outputs (Z x levels), its pooled
        features (Z x F, what the head reads) and its vertebral phase (Z x 2, or None). The head can then be run
        on any subset of the slices (predict_offsets_mm), as benchmarks/review_candidates.py does to ask whether
        a level moves when part of the scan is cut away."""
        if self.heads is None:
            raise BodycompError(f"{self.run.run_dir}: has no series head, so no series features")
        hu_volume, window = np.asarray(hu_volume), self.run.config.window
        outputs, features, phase = self._cnn_pass(
            len(hu_volume), lambda rows: window_hu(hu_volume[rows], window.level, window.width), z_mm
        )
        return outputs, np.asarray(features), phase

    @torch.no_grad()
    def _cnn_pass(
        self, n_slices: int, slices_8bit: Callable[[np.ndarray], np.ndarray], z_mm: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The per-slice CNN over every slice: its sigmoid outputs, and with a series head its pooled features
        and (in runs that output it) its vertebral phase."""
        run, config = self.run, self.run.config
        try:
            rows = volume_context_rows(n_slices, z_mm, config.context_mm)
        except ValueError:
            raise BodycompError(
                f"{run.run_dir}: was trained with --context-mm {config.context_mm:g}; give z_mm per slice"
            ) from None
        if self.heads is not None and (z_mm is None or len(z_mm) != n_slices):
            raise BodycompError(f"{run.run_dir}: has a series head, which needs every slice's z_mm (one whole series)")
        levels = output_levels(config)
        n_levels = len(levels)
        outputs = np.empty((n_slices, n_levels), dtype=np.float32)  # the per-slice CNN's, with or without a head
        features: list[np.ndarray] = []  # with a series head: the CNN's pooled features, which the head reads
        phases: list[np.ndarray] = []  # and its vertebral phase outputs, in runs that have them
        phase = phase_columns(config)
        for start in range(0, n_slices, self.batch_size):
            batch_rows = rows[start : start + self.batch_size]
            pixels = slices_8bit(batch_rows.ravel())
            stacked = pixels.reshape(*batch_rows.shape, *pixels.shape[-2:])  # B x channels x H x W
            images = selection_input(stacked, config.image_size).to(run.device)
            with run.autocast():
                if self.heads is None:
                    logits = run.model(images)
                else:
                    logits, pooled = classifier_features(run.model, images)
                    features.append(pooled.float().cpu().numpy())
                    if phase is not None:
                        phases.append(logits[:, phase].float().cpu().numpy())
                sigmoid = torch.sigmoid(logits[:, :n_levels].float()).cpu().numpy()
                outputs[start : start + self.batch_size] = sigmoid
        pooled = np.concatenate(features) if features else None
        return outputs, pooled, (np.concatenate(phases) if phases else None)

    def _evidence(
        self, n_slices: int, slices_8bit: Callable[[np.ndarray], np.ndarray], z_mm: np.ndarray | None
    ) -> SelectionEvidence:
        levels = output_levels(self.run.config)
        outputs, pooled_all, phase_outputs = self._cnn_pass(n_slices, slices_8bit, z_mm)
        if self.heads is None or pooled_all is None:
            return SelectionEvidence(levels, outputs, outputs)
        # The head's offsets, in the form of the CNN's outputs, so the one slice-choice rule reads both alike.
        offsets = predict_offsets_mm(self.heads, np.asarray(z_mm), pooled_all, phase_outputs)
        head = None  # where the head alone put each level: a second pass of the (tiny) head, without the snap
        if phase_outputs is not None:
            unsnapped = predict_offsets_mm(self.heads, np.asarray(z_mm), pooled_all)
            head = outputs_from_offsets(unsnapped, self.run.config.threshold).astype(np.float32)
        chosen = outputs_from_offsets(offsets, self.run.config.threshold).astype(np.float32)
        return SelectionEvidence(levels, chosen, outputs, head, phase_outputs)
