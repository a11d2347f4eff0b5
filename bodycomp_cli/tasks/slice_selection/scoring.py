"""Slice-selection report card: offset MAE near each level, and the slice-choice rule's per-series error.

The metrics are core.metrics', the ones train-select's validation reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bodycomp_cli.core.metacsv import read_meta_csv
from bodycomp_cli.core.metrics import near_level_mae, series_selection_errors, summarise_errors
from bodycomp_cli.core.preprocess import series_groups
from bodycomp_cli.core.runconfig import RunConfig
from bodycomp_cli.data.slices import png_name, read_gray8_png
from bodycomp_cli.errors import BodycompError


def _read_pngs(paths: list[Path]) -> np.ndarray:
    return np.stack([read_gray8_png(path) for path in paths])


def evaluate_slice_selection(
    config: RunConfig,
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
    levels, threshold = list(config.levels), config.threshold
    meta = read_meta_csv(data_dir / "meta" / f"{split}.csv", levels)
    image_dir = data_dir / "images" / split
    paths = [image_dir / png_name(index) for index in range(meta.count)]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise BodycompError(f"{missing[0]}: not found ({meta.path} has {meta.count} rows)")
    outputs = np.zeros((len(paths), len(levels)), dtype=np.float64)
    task = progress.add_task("evaluate", total=len(paths)) if progress else None
    if config.context_mm > 0 or config.series_head:
        # A context model needs each slice's neighbours, a series head the whole series: one series at a
        # time, with its z positions.
        if not meta.has_series:
            what = "a series head" if config.series_head else "--context-mm"
            raise BodycompError(f"{meta.path}: the run uses {what}; the CSV needs series and z_mm columns")
        for rows in series_groups(meta.series):
            outputs[rows] = predict(_read_pngs([paths[row] for row in rows]), meta.z_mm[rows])
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
        mae, n_near = near_level_mae(outputs[:, k], meta.offsets_mm[:, k], threshold)
        entry: dict = {"mae_mm": mae, "n_near": n_near, "selection": None}
        if meta.has_series:
            errors = series_selection_errors(meta.series, meta.z_mm, outputs[:, k], meta.offsets_mm[:, k], threshold)
            entry["selection"] = summarise_errors(errors)
            entry["series"] = [asdict(error) for error in errors]
        report["levels"][level] = entry
    return report
