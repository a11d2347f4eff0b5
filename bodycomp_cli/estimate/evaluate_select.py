"""Slice-selection report card: offset MAE near each level, and the estimate rule's per-series error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from bodycomp_cli.data.slices import png_name, read_gray8_png, series_groups
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.estimate.selection import select_level_slice

NEAR_THRESHOLDS = 3.0  # the MAE counts slices within +-3 thresholds of the level, where the sigmoid inverts


def offsets_from_outputs(outputs: np.ndarray, threshold_mm: float) -> np.ndarray:
    """Invert the target sigmoid(offset / T): offset = T * logit(p), with p kept off 0 and 1."""
    p = np.clip(np.asarray(outputs, dtype=np.float64), 1e-6, 1 - 1e-6)
    return threshold_mm * np.log(p / (1.0 - p))


def near_level_mae(outputs: np.ndarray, offsets: np.ndarray, threshold_mm: float) -> tuple[float | None, int]:
    """Mean |predicted - true offset| in mm over slices within +-3T of the level (blank offsets skipped)."""
    near = np.isfinite(offsets) & (np.abs(offsets) <= NEAR_THRESHOLDS * threshold_mm)
    if not near.any():
        return None, 0
    errors = np.abs(offsets_from_outputs(outputs[near], threshold_mm) - offsets[near])
    return float(errors.mean()), int(near.sum())


def series_selection_errors(
    series: np.ndarray, z_mm: np.ndarray, outputs: np.ndarray, offsets: np.ndarray, threshold_mm: float
) -> list[dict]:
    """Per series holding the level: the estimate rule's chosen slice against the true level position."""
    results = []
    for rows in series_groups(series):
        name = series[rows[0]]
        known = np.isfinite(offsets[rows])
        if not known.any():
            continue  # the level is not in this series
        order = rows[np.argsort(z_mm[rows], kind="stable")]
        z = z_mm[order]
        # Every labelled slice says where the level is (z - offset); they agree up to rounding.
        z_level = float(np.median((z_mm[rows] - offsets[rows])[known]))
        choice = select_level_slice(outputs[order], z, threshold_mm)
        true_index = int(np.argmin(np.abs(z - z_level)))
        results.append(
            {
                "series": str(name),
                "chosen_z_mm": float(z[choice.index]),
                "level_z_mm": z_level,
                "error_mm": float(z[choice.index] - z_level),
                "error_slices": int(abs(choice.index - true_index)),
                "zero_crossings": choice.zero_crossings,
            }
        )
    return results


def summarise_errors(errors: list[dict]) -> dict | None:
    if not errors:
        return None
    mm = np.abs([entry["error_mm"] for entry in errors])
    slices = np.array([entry["error_slices"] for entry in errors], dtype=np.float64)
    return {
        "n_series": len(errors),
        "median_mm": float(np.median(mm)),
        "mean_mm": float(mm.mean()),
        "median_slices": float(np.median(slices)),
        "mean_slices": float(slices.mean()),
        "within_5mm": float((mm <= 5.0).mean()),
        "within_10mm": float((mm <= 10.0).mean()),
    }


def _read_meta(data_dir: Path, split: str, levels: list[str]):
    import pandas as pd

    meta_path = data_dir / "meta" / f"{split}.csv"
    if not meta_path.is_file():
        raise BodycompError(f"{meta_path}: not found (slice-selection data from prepare-slices, --split {split})")
    try:
        meta = pd.read_csv(meta_path, index_col=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise BodycompError(f"{meta_path}: not a readable CSV ({str(error).splitlines()[0]})") from None
    columns = {level: f"ZOffset_{level}" for level in levels}
    if len(levels) == 1 and "ZOffset" in meta.columns:
        columns[levels[0]] = "ZOffset"  # the original's single-level column, which it read first
    for level, column in columns.items():
        if column not in meta.columns:
            raise BodycompError(f"{meta_path}: no {column} column for level {level} (found: {', '.join(meta.columns)})")
        if not pd.api.types.is_numeric_dtype(meta[column]):
            raise BodycompError(f"{meta_path}: column {column} is not numeric")
    if {"series", "z_mm"} <= set(meta.columns):  # the selection error needs both on every row
        z_mm = pd.to_numeric(meta["z_mm"], errors="coerce")
        bad = meta["series"].isna().to_numpy() | ~np.isfinite(z_mm.to_numpy(dtype=np.float64, na_value=np.nan))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise BodycompError(f"{meta_path}: row {row}: series or z_mm is blank or not a number")
    return meta_path, meta, columns


def _read_pngs(paths: list[Path]) -> np.ndarray:
    return np.stack([read_gray8_png(path) for path in paths])


def evaluate_slice_selection(
    run,
    predict: Callable[[np.ndarray], np.ndarray],
    data_dir: Path,
    split: str,
    batch_size: int = 64,
    progress=None,
) -> dict:
    """Per level: offset MAE near the level; with series and z_mm in the meta CSV, the selection error.

    `predict` maps a batch of 8-bit slices (N x H x W uint8), and for a --context-mm run one whole series
    with its z_mm, to N x n_levels sigmoid outputs.
    """
    levels = [str(level) for level in run.config["levels"]]
    threshold = float(run.config.get("threshold", 10.0))
    meta_path, meta, columns = _read_meta(data_dir, split, levels)
    image_dir = data_dir / "images" / split
    paths = [image_dir / png_name(index) for index in range(len(meta))]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise BodycompError(f"{missing[0]}: not found ({meta_path} has {len(meta)} rows)")
    outputs = np.zeros((len(paths), len(levels)), dtype=np.float64)
    task = progress.add_task("evaluate", total=len(paths)) if progress else None
    has_series = {"series", "z_mm"} <= set(meta.columns)
    if float(run.config.get("context_mm") or 0.0) > 0:
        # A context model needs each slice's neighbours: one series at a time, with its z positions.
        if not has_series:
            raise BodycompError(f"{meta_path}: the run uses --context-mm; the CSV needs series and z_mm columns")
        z_all = meta["z_mm"].to_numpy(np.float64)
        for rows in series_groups(meta["series"].astype(str).to_numpy()):
            outputs[rows] = predict(_read_pngs([paths[row] for row in rows]), z_all[rows])
            if progress:
                progress.advance(task, len(rows))
    else:
        for start in range(0, len(paths), batch_size):
            batch = paths[start : start + batch_size]
            outputs[start : start + len(batch)] = predict(_read_pngs(batch))
            if progress:
                progress.advance(task, len(batch))
    report: dict = {"slices": len(paths), "threshold_mm": threshold, "levels": {}}
    for k, level in enumerate(levels):
        offsets = meta[columns[level]].to_numpy(dtype=np.float64)
        mae, n_near = near_level_mae(outputs[:, k], offsets, threshold)
        entry: dict = {"mae_mm": mae, "n_near": n_near, "selection": None}
        if has_series:
            errors = series_selection_errors(
                meta["series"].astype(str).to_numpy(),
                meta["z_mm"].to_numpy(np.float64),
                outputs[:, k],
                offsets,
                threshold,
            )
            entry["selection"] = summarise_errors(errors)
            entry["series"] = errors
        report["levels"][level] = entry
    return report
