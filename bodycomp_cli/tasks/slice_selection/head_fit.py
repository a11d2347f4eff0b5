"""Train a slice-selection run's series head: CNN features of whole series in, series_head.pt out.

Runs after the CNN's last epoch (and on --resume of a finished run whose head is missing), in one process.
Writes series_head.pt and series_head.json (the head's slice choice on the val series, per level).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bodycomp_cli.core.metacsv import SliceMeta
from bodycomp_cli.core.metrics import level_z_mm, outputs_from_offsets, series_selection_errors, summarise_errors
from bodycomp_cli.core.preprocess import series_groups
from bodycomp_cli.core.runconfig import read_run_config
from bodycomp_cli.engine.checkpoint import BEST, LAST, load_checkpoint
from bodycomp_cli.engine.devices import strip_prefix
from bodycomp_cli.io.atomic import atomic_write_text
from bodycomp_cli.tasks.slice_selection.model import build_selection_model
from bodycomp_cli.tasks.slice_selection.outputs import phase_columns
from bodycomp_cli.tasks.slice_selection.series_head import (
    HEAD_FILE,
    HeadSettings,
    SeriesFeatures,
    classifier_features,
    predict_offsets_mm,
    save_heads,
    train_heads,
)

HEAD_REPORT = "series_head.json"


def is_main_process() -> bool:
    """True outside torchrun and on its rank 0 (the other ranks have nothing left to do)."""
    return os.environ.get("RANK", "0") == "0"


@torch.no_grad()
def slice_features(
    model: torch.nn.Module,
    dataset,
    phase_columns: slice | None = None,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The CNN's pooled features of every item of a slice dataset, in order (N x C float32), and its phase
    outputs (N x 2, the output columns phase_columns; None without). PROGRESS(slices) after every batch.

    In full precision, as evaluate computes them on the CPU, so series_head.json reports what evaluate finds.
    """
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    features, phases = [], []
    for batch in loader:
        outputs, pooled = classifier_features(model, batch["image"])
        features.append(pooled.float().numpy())
        if phase_columns is not None:
            phases.append(outputs[:, phase_columns].float().numpy())
        if progress is not None:
            progress(len(pooled))
    return np.concatenate(features), (np.concatenate(phases) if phase_columns is not None else None)


def series_of(meta: SliceMeta, features: np.ndarray, phase: np.ndarray | None) -> list[SeriesFeatures]:
    """Group a split's slices by series (z ascending) with each level's true z (the median of z - offset)."""
    result = []
    for rows in series_groups(meta.series):
        rows = rows[np.argsort(meta.z_mm[rows], kind="stable")]
        level_z = np.array([level_z_mm(meta.z_mm[rows], offsets) for offsets in meta.offsets_mm[rows].T])
        result.append(SeriesFeatures(meta.z_mm[rows], features[rows], level_z, None if phase is None else phase[rows]))
    return result


def fit_series_head(
    run_dir: Path, head: HeadSettings, datasets: dict[str, tuple[Any, SliceMeta]], seed: int, quiet: bool = False
) -> dict:
    """Train the head on the best CNN's features of the train series; report its choice on the val series.

    A progress bar shows the stage (minutes on a loaded CPU); Ctrl-C says how to finish the run.
    """
    try:
        with _stage_progress(quiet) as bar:
            report = _fit_series_head(run_dir, head, datasets, seed, bar)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"interrupted while training the series head; the CNN's epochs are saved in {run_dir}. "
            f"To finish the run, run the same command with: -a {run_dir.name} --resume"
        ) from None
    if not quiet:  # after the bars are done, so that the line stands below them
        parts = [f"{level} median {r['median_mm']:.1f} mm" for level, r in report["levels"].items() if r]
        Console(soft_wrap=True).print(
            f"series head: val selection {', '.join(parts) or 'n/a'} -> {run_dir / HEAD_FILE}"
        )
    return report


class _StageBar:
    """The head stage's two bars: the CNN's features of every slice, then the head's training steps."""

    def __init__(self, progress: Progress | None, slices: int) -> None:
        self.progress = progress
        if progress is not None:
            self.features = progress.add_task("series head: CNN features", total=slices, unit="slices")
            self.training = progress.add_task("series head: training", total=None, unit="steps", visible=False)

    def slices_done(self, count: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.features, count)

    def steps_done(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress.update(self.training, completed=done, total=total, visible=True)


@contextlib.contextmanager
def _stage_progress(quiet: bool) -> Iterator[Callable[[int], _StageBar]]:
    if quiet:
        yield lambda slices: _StageBar(None, slices)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        yield lambda slices: _StageBar(progress, slices)


def _fit_series_head(
    run_dir: Path,
    head: HeadSettings,
    datasets: dict[str, tuple[Any, SliceMeta]],
    seed: int,
    make_bar: Callable[[int], _StageBar],
) -> dict:
    config = read_run_config(run_dir)
    model = build_selection_model(config)
    # The best CNN; a run killed just before best was first published and resumed afterwards has only its last.
    source = run_dir / BEST if (run_dir / BEST).is_file() else run_dir / LAST
    model.load_state_dict(strip_prefix(load_checkpoint(source)["model"]))
    model.eval()
    bar = make_bar(sum(len(dataset) for dataset, _ in datasets.values()))
    splits = {
        split: series_of(meta, *slice_features(model, dataset, phase_columns(config), progress=bar.slices_done))
        for split, (dataset, meta) in datasets.items()
    }
    heads = train_heads(splits["train"], head, seed, progress=bar.steps_done)
    val = splits["val"]
    predicted = [predict_offsets_mm(heads, entry.z_mm, entry.features, entry.phase) for entry in val]  # once each
    series = np.concatenate([[f"series_{index}"] * len(entry.z_mm) for index, entry in enumerate(val)])
    z = np.concatenate([entry.z_mm for entry in val])
    report: dict = {"levels": {}}
    for k, level in enumerate(config.levels):
        outputs = np.concatenate([outputs_from_offsets(p[:, k], config.threshold) for p in predicted])
        offsets = np.concatenate([entry.z_mm - entry.level_z_mm[k] for entry in val])
        errors = series_selection_errors(series, z, outputs, offsets, config.threshold)
        report["levels"][level] = summarise_errors(errors)
    save_heads(run_dir / HEAD_FILE, heads, head)
    atomic_write_text(run_dir / HEAD_REPORT, json.dumps(report, indent=1) + "\n")
    return report
