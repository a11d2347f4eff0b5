"""Segmentation report card: per-tissue Dice and area error on prepared arrays ({split}_images/masks.npy)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bodycomp_cli.core.metrics import dice_summary, segmentation_counts
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.arrays import read_npy
from bodycomp_cli.io.atomic import atomic_path
from bodycomp_cli.tasks.segmentation.overlay import overlay_rgb

WORST_CASES = 4  # overlay PNGs of the slices with the lowest mean Dice


def _pixel_area_cm2(data_dir: Path, split: str, n: int, pixel_spacing_mm: float | None) -> np.ndarray | None:
    """cm^2 per pixel for every slice: --pixel-spacing, else row/col_spacing_mm columns of the index CSV."""
    if pixel_spacing_mm is not None:
        return np.full(n, pixel_spacing_mm**2 / 100.0)
    index_csv = data_dir / f"{split}_index.csv"
    if not index_csv.is_file():
        return None
    import pandas as pd

    table = pd.read_csv(index_csv)
    if not {"row_spacing_mm", "col_spacing_mm"} <= set(table.columns) or len(table) != n:
        return None
    area = table["row_spacing_mm"].to_numpy(float) * table["col_spacing_mm"].to_numpy(float) / 100.0
    return area if np.all(np.isfinite(area)) else None


def _load_arrays(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for kind in ("images", "masks"):
        path = data_dir / f"{split}_{kind}.npy"
        if not path.is_file():
            raise BodycompError(f"{path}: not found (segmentation data from prepare-seg, --split {split})")
        array = read_npy(path, mmap_mode="r")
        if array.ndim == 4 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim != 3:
            raise BodycompError(f"{path}: expected N x H x W (x 1), got shape {array.shape}")
        arrays.append(array)
    images, masks = arrays
    if images.shape != masks.shape:
        raise BodycompError(f"{data_dir}: {split}_images.npy {images.shape} and {split}_masks.npy {masks.shape} differ")
    if images.dtype == np.uint8:
        raise BodycompError(f"{data_dir / (split + '_images.npy')}: uint8 images; raw HU is expected")
    return images, masks


def evaluate_segmentation(
    classes: list[str],
    predict: Callable[[np.ndarray], np.ndarray],
    data_dir: Path,
    split: str,
    output_dir: Path,
    batch_size: int = 16,
    pixel_spacing_mm: float | None = None,
    progress=None,
) -> dict:
    """Dice per tissue (mean over slices and pooled, as validation computes it) and area error, plus worst-case
    overlay PNGs."""
    images, masks = _load_arrays(data_dir, split)
    if int(masks.max()) >= len(classes):
        raise BodycompError(f"{data_dir / (split + '_masks.npy')}: label {int(masks.max())} but the run has {classes}")
    counts = np.zeros((len(images), len(classes) - 1, 3), dtype=np.int64)
    task = progress.add_task("evaluate", total=len(images)) if progress else None
    for start in range(0, len(images), batch_size):
        stop = min(start + batch_size, len(images))
        prediction = predict(np.asarray(images[start:stop]))
        counts[start:stop] = segmentation_counts(prediction, np.asarray(masks[start:stop]), len(classes)).numpy()
        if progress:
            progress.advance(task, stop - start)
    dice = dice_summary(counts)
    mean, pooled, per_slice = dice.mean, dice.pooled, dice.per_slice
    area = _pixel_area_cm2(data_dir, split, len(images), pixel_spacing_mm)
    unit = "cm2" if area is not None else "px"
    # Area error = predicted - true = fp - fn, per slice; in pixels when no spacing is known.
    difference = (counts[..., 1] - counts[..., 2]).astype(np.float64)
    if area is not None:
        difference = difference * area[:, None]
    tissues = {}
    for k, tissue in enumerate(classes[1:]):
        tissues[tissue] = {
            "dice_mean": _number(mean[k]),
            "dice_pooled": _number(pooled[k]),
            "dice_slices": int(np.isfinite(per_slice[:, k]).sum()),
            f"area_error_abs_{unit}": float(np.abs(difference[:, k]).mean()),
            f"area_error_signed_{unit}": float(difference[:, k].mean()),
        }
    ids = _slice_ids(data_dir, split, len(images))
    worst = _write_worst_cases(per_slice, images, masks, predict, classes, output_dir, ids)
    return {"slices": len(images), "area_unit": unit, "tissues": tissues, "worst_slices": worst}


def _slice_ids(data_dir: Path, split: str, n: int) -> list[str] | None:
    """The slices' ids (prepare-seg's manifest `id`) from SPLIT_index.csv, in array order; None without."""
    index_csv = data_dir / f"{split}_index.csv"
    if not index_csv.is_file():
        return None
    import pandas as pd

    table = pd.read_csv(index_csv, dtype={"id": str})
    return [str(value) for value in table["id"]] if "id" in table.columns and len(table) == n else None


def _file_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "slice"


def _write_worst_cases(per_slice, images, masks, predict, classes, output_dir: Path, ids=None) -> list[dict]:
    """Overlay PNGs of the slices with the lowest mean Dice over the tissues they hold, named by slice id
    (IDS, in array order) where the data has them, else by index."""
    counted = np.isfinite(per_slice)
    # A slice with no tissue at all, in truth or prediction, is perfect (score 1).
    sums = np.where(counted, per_slice, 0.0).sum(1)
    slice_score = np.where(counted.any(1), sums / np.maximum(counted.sum(1), 1), 1.0)
    entries = []
    for rank, index in enumerate(np.argsort(slice_score, kind="stable")[:WORST_CASES], start=1):
        index = int(index)
        prediction = predict(np.asarray(images[index : index + 1]))[0]
        slice_id = ids[index] if ids is not None else None
        name = f"worst_{rank}_{_file_safe(slice_id)}.png" if slice_id else f"worst_{rank}_slice_{index:06d}.png"
        _save_comparison(output_dir / name, images[index], masks[index], prediction, classes, index, slice_score[index])
        entries.append({"slice": index, "id": slice_id, "mean_dice": float(slice_score[index]), "png": name})
    return entries


def _number(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def _save_comparison(path, hu, truth, prediction, classes, index, score) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.3), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    for axes, labels, title in zip(figure.subplots(1, 2), (truth, prediction), ("truth", "prediction"), strict=True):
        axes.imshow(overlay_rgb(np.asarray(hu), np.asarray(labels), classes), interpolation="nearest")
        axes.set_title(f"slice {index}: {title}")
        axes.set_axis_off()
    figure.suptitle(f"mean Dice {score:.3f}")
    with atomic_path(Path(path)) as tmp:
        figure.savefig(tmp, format="png")
