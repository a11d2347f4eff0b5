"""The numbers validation (history.csv) and `evaluate` (evaluation.json) both report, computed once.

Segmentation: per-slice confusion counts per tissue, and Dice from them with smp's F1 score (F1 is Dice).
Slice selection: the offset MAE near each level (inverting the target sigmoid with one clamp) and the
per-series error of the slice-choice rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bodycomp_cli.core.preprocess import series_groups
from bodycomp_cli.core.selection import select_level_slice

LOGIT_CLAMP = 1e-6  # outputs are kept within [1e-6, 1 - 1e-6] before the logit: |offset| <= 13.8 thresholds
NEAR_LEVEL_THRESHOLDS = 3.0  # the MAE counts slices within +-3 thresholds of the level, where the sigmoid inverts


# ----- segmentation -------------------------------------------------------------------------------------------
def segmentation_counts(
    predicted: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor, n_classes: int
) -> torch.Tensor:
    """N x (classes - 1) x 3 int64 pixel counts per slice and tissue (background dropped): (tp, fp, fn).

    Vectorised on the labels' device (validation keeps its stats on the GPU, without a host sync per slice).
    """
    predicted, truth = _flat_labels(predicted), _flat_labels(truth)
    tissues = torch.arange(1, n_classes, device=predicted.device)[None, :, None]  # 1 x tissues x 1
    guess, true = predicted[:, None, :] == tissues, truth[:, None, :] == tissues  # N x tissues x pixels
    tp = (guess & true).sum(-1)
    return torch.stack([tp, guess.sum(-1) - tp, true.sum(-1) - tp], dim=-1)


def _flat_labels(labels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """N x (H * W) int64 labels (a copy of numpy input: a memmap is read-only)."""
    if not isinstance(labels, torch.Tensor):
        labels = torch.from_numpy(np.asarray(labels).astype(np.int64))
    return labels.reshape(len(labels), -1).long()


@dataclass(frozen=True)
class DiceSummary:
    mean: np.ndarray  # per tissue: mean over the slices where the tissue is in truth or prediction (NaN: none)
    pooled: np.ndarray  # per tissue: Dice of all pixels of all slices together
    per_slice: np.ndarray  # N x tissues, NaN where the tissue is absent from both (skipped, not scored 0 or 1)


def dice_summary(counts: np.ndarray) -> DiceSummary:
    """Dice per slice, mean over slices and pooled, per tissue, from segmentation_counts (N x tissues x 3)."""
    import segmentation_models_pytorch as smp

    tp, fp, fn = (torch.from_numpy(np.asarray(counts)[..., k].astype(np.float64)) for k in range(3))
    nan = float("nan")
    per_slice = smp.metrics.f1_score(tp, fp, fn, torch.zeros_like(tp), reduction="none", zero_division=nan).numpy()
    pooled = smp.metrics.f1_score(
        tp.sum(0), fp.sum(0), fn.sum(0), torch.zeros_like(tp[0]), reduction="none", zero_division=nan
    ).numpy()
    counted = np.isfinite(per_slice).sum(0)
    mean = np.array([np.nanmean(per_slice[:, k]) if counted[k] else nan for k in range(per_slice.shape[1])])
    return DiceSummary(mean, pooled, per_slice)


# ----- slice selection ----------------------------------------------------------------------------------------
def offsets_from_outputs(outputs: np.ndarray, threshold_mm: float) -> np.ndarray:
    """Invert the target sigmoid(offset / T): offset = T * logit(p), with p kept LOGIT_CLAMP off 0 and 1."""
    p = np.clip(np.asarray(outputs, dtype=np.float64), LOGIT_CLAMP, 1 - LOGIT_CLAMP)
    return threshold_mm * np.log(p / (1.0 - p))


def outputs_from_offsets(offsets_mm: np.ndarray, threshold_mm: float) -> np.ndarray:
    """Offsets in mm in the form of the model's outputs, sigmoid(offset / T): what the slice-choice rule reads."""
    scaled = np.clip(np.asarray(offsets_mm, dtype=np.float64) / threshold_mm, -50.0, 50.0)  # exp stays finite
    return 1.0 / (1.0 + np.exp(-scaled))


def near_level_mae(outputs: np.ndarray, offsets: np.ndarray, threshold_mm: float) -> tuple[float | None, int]:
    """Mean |predicted - true offset| in mm over slices within +-3T of the level (blank offsets skipped)."""
    offsets = np.asarray(offsets, dtype=np.float64)
    near = np.isfinite(offsets) & (np.abs(offsets) <= NEAR_LEVEL_THRESHOLDS * threshold_mm)
    if not near.any():
        return None, 0
    errors = np.abs(offsets_from_outputs(np.asarray(outputs)[near], threshold_mm) - offsets[near])
    return float(errors.mean()), int(near.sum())


def level_z_mm(z_mm: np.ndarray, offsets: np.ndarray) -> float:
    """Where a level lies in one series: the median of z - offset over its labelled slices (NaN: none).

    Every labelled slice says where the level is; their median is robust to rounding.
    """
    known = np.isfinite(offsets)
    return float(np.median((np.asarray(z_mm) - offsets)[known])) if known.any() else float("nan")


@dataclass(frozen=True)
class SeriesError:
    series: str
    chosen_z_mm: float
    level_z_mm: float
    error_mm: float  # chosen - true, signed (+ toward the head)
    error_slices: int
    zero_crossings: int


def series_selection_errors(
    series: np.ndarray, z_mm: np.ndarray, outputs: np.ndarray, offsets: np.ndarray, threshold_mm: float
) -> list[SeriesError]:
    """Per series holding the level: the slice-choice rule's slice against the true level position.

    series, z_mm, outputs (one level's sigmoid outputs) and offsets (true, NaN where unknown): one value per slice.
    """
    series = np.asarray(series).astype(str)
    z_mm, offsets = np.asarray(z_mm, dtype=np.float64), np.asarray(offsets, dtype=np.float64)
    outputs = np.asarray(outputs, dtype=np.float64)
    results = []
    for rows in series_groups(series):
        known = np.isfinite(offsets[rows])
        if not known.any():
            continue  # the level is not in this series
        order = rows[np.argsort(z_mm[rows], kind="stable")]
        z = z_mm[order]
        z_level = level_z_mm(z_mm[rows], offsets[rows])
        choice = select_level_slice(outputs[order], z, threshold_mm)
        true_index = int(np.argmin(np.abs(z - z_level)))
        chosen = float(z[choice.index])
        results.append(
            SeriesError(
                str(series[rows[0]]),
                chosen,
                z_level,
                chosen - z_level,
                abs(choice.index - true_index),
                choice.zero_crossings,
            )
        )
    return results


def summarise_errors(errors: list[SeriesError]) -> dict | None:
    """Median and mean |error| (mm and slices) and the share within 5 and 10 mm; None without series."""
    if not errors:
        return None
    mm = np.abs([entry.error_mm for entry in errors])
    slices = np.array([entry.error_slices for entry in errors], dtype=np.float64)
    return {
        "n_series": len(errors),
        "median_mm": float(np.median(mm)),
        "mean_mm": float(mm.mean()),
        "median_slices": float(np.median(slices)),
        "mean_slices": float(slices.mean()),
        "within_5mm": float((mm <= 5.0).mean()),
        "within_10mm": float((mm <= 10.0).mean()),
    }
