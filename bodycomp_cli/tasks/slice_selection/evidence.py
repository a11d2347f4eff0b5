"""What the slice-selection run says about one series, kept apart so that the cues of a review can be compared.

Every array has one row per slice and one column per output level, in the form of the CNN's outputs,
sigmoid((z_slice - z_level) / T). In series-head runs `outputs` (what the slice-choice rule reads) is built from
the head's one level position, so it crosses 0.5 exactly once whatever the slices show; `cnn_outputs` is what
the per-slice CNN itself said, and `head_outputs` where the head put the level before the vertebral phase
snapped it. Those three fail for different reasons, which is what estimate/review.py compares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SelectionEvidence:
    levels: list[str]  # the output levels, in column order
    outputs: np.ndarray  # Z x levels: what the slice choice reads
    cnn_outputs: np.ndarray  # Z x levels: the per-slice CNN's own sigmoid outputs (= outputs without a head)
    head_outputs: np.ndarray | None = None  # Z x levels: the series head's before the phase snap (None: no snap)
    phase: np.ndarray | None = None  # Z x 2: the CNN's (cos, sin) vertebral phase, in runs that output it

    def columns(self, levels: list[str]) -> SelectionEvidence:
        """The same evidence for `levels` only, in that order (each must be an output level)."""
        index = [self.levels.index(level) for level in levels]
        head = None if self.head_outputs is None else self.head_outputs[:, index]
        return SelectionEvidence(list(levels), self.outputs[:, index], self.cnn_outputs[:, index], head, self.phase)
