"""Load a trained run and apply it: the contract that `estimate` and `evaluate` code against."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bodycomp_cli.core.amp import choose_amp
from bodycomp_cli.core.metrics import outputs_from_offsets
from bodycomp_cli.core.preprocess import (
    resize_labels,
    segmentation_input,
    selection_input,
    volume_context_rows,
    window_hu,
)
from bodycomp_cli.core.runconfig import CONFIG_FILE, RunConfig, read_run_config
from bodycomp_cli.engine.checkpoint import BEST, LAST, load_checkpoint
from bodycomp_cli.engine.devices import strip_prefix
from bodycomp_cli.engine.models import build_model
from bodycomp_cli.engine.series_head import HEAD_FILE, SeriesHead, classifier_features, load_heads, predict_offsets_mm
from bodycomp_cli.errors import BodycompError, reason

CHECKPOINTS = {"best": BEST, "last": LAST}


@dataclass
class LoadedRun:
    model: torch.nn.Module  # in eval mode, on `device`
    config: RunConfig  # the run's config.json
    task_name: str  # "segmentation" or "slice_selection"
    device: torch.device
    run_dir: Path
    amp: bool = True  # autocast on GPUs as core/amp.py decides; estimate/evaluate --no-amp turns it off
    heads: list[SeriesHead] | None = None  # slice selection with a series head: its ensemble, on the CPU
    cpu_amp: bool = False  # also bf16 autocast on CPUs with bf16 instructions (estimate turns it on); off: exact


def load_run(run_dir: Path, device: str | torch.device = "cpu", which: str = "best") -> LoadedRun:
    """Rebuild a run's model from config.json and checkpoint_{which}.pt (which: best or last).

    Example: run = load_run(Path("models/seg_v1")); labels = predict_segmentation(run, volume.hu)
    """
    run_dir = Path(run_dir)
    if which not in CHECKPOINTS:
        raise BodycompError(f"checkpoint {which!r}: valid choices: {', '.join(CHECKPOINTS)}")
    checkpoint_path = run_dir / CHECKPOINTS[which]
    config = read_run_config(run_dir)
    if not checkpoint_path.is_file():
        raise BodycompError(f"{run_dir}: has no {checkpoint_path.name} (train it first, or pick another run)")
    device = torch.device(device)
    try:  # a config.json edited or damaged by hand can name an unknown model or lack a key
        model = build_model(config)
    except BodycompError:
        raise
    except Exception as error:
        raise BodycompError(
            f"{run_dir / CONFIG_FILE}: cannot rebuild the model ({type(error).__name__}: {reason(error)})"
        ) from None
    checkpoint = load_checkpoint(checkpoint_path, map_location=device)
    try:
        model.load_state_dict(strip_prefix(checkpoint["model"]))
    except (KeyError, TypeError, RuntimeError) as error:  # weights of another model, or a damaged dict
        raise BodycompError(
            f"{checkpoint_path}: weights do not fit the model of config.json ({reason(error)})"
        ) from None
    # channels_last: the layout oneDNN's and cuDNN's fastest convolutions use (docs/performance.md, issue 15).
    model.to(device, memory_format=torch.channels_last).eval()
    heads = load_heads(run_dir / HEAD_FILE) if config.task == "slice_selection" and config.series_head else None
    return LoadedRun(model, config, config.task, device, run_dir, heads=heads)


def _require(run: LoadedRun, task: str) -> None:
    if run.task_name != task:
        raise BodycompError(f"{run.run_dir}: is a {run.task_name} run, not a {task} run")


def _autocast(run: LoadedRun):
    # The engine's one AMP decision (core/amp.py). By default the CPU path stays full precision, so a run's
    # validation metrics are reproduced exactly; estimate opts the CPU in (bf16 where the CPU computes it natively).
    return choose_amp(run.device, run.amp, cpu=run.cpu_amp).autocast()


@torch.no_grad()
def predict_segmentation(run: LoadedRun, hu_slices: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """N x H x W raw HU -> N x H x W uint8 labels at the input size (window as trained, argmax of logits)."""
    _require(run, "segmentation")
    hu_slices = np.asarray(hu_slices)
    if hu_slices.ndim == 2:
        hu_slices = hu_slices[None]
    window, size = run.config.window, run.config.image_size
    labels = np.empty(hu_slices.shape, dtype=np.uint8)
    for start in range(0, len(hu_slices), batch_size):
        images = segmentation_input(hu_slices[start : start + batch_size], window.level, window.width, size)
        with _autocast(run):
            logits = run.model(images.to(run.device))
        # Labels at the model's size go back to the slice's size with nearest, so every output pixel carries
        # a label the model chose; nearest-exact keeps pixel centres aligned.
        predicted = resize_labels(logits.argmax(dim=1).to(torch.uint8), hu_slices.shape[-2:])
        labels[start : start + batch_size] = predicted.cpu().numpy()
    return labels


def predict_slice_offsets(
    run: LoadedRun, hu_volume: np.ndarray, batch_size: int = 32, z_mm: np.ndarray | None = None
) -> np.ndarray:
    """Z x H x W raw HU -> Z x n_levels sigmoid outputs (the model saw 8-bit windowed PNGs, so window to uint8).

    A model trained with --context-mm also needs each slice's z_mm (Z,), to find its neighbours.
    """
    hu_volume, window = np.asarray(hu_volume), run.config.window

    def windowed(rows: np.ndarray) -> np.ndarray:
        # Batch by batch: windowing a whole volume at once would take 8 bytes (float64) per voxel.
        return window_hu(hu_volume[rows], window.level, window.width)

    return _predict_offsets(run, len(hu_volume), windowed, batch_size, z_mm)


def predict_slice_offsets_8bit(
    run: LoadedRun, pixels: np.ndarray, batch_size: int = 32, z_mm: np.ndarray | None = None
) -> np.ndarray:
    """Z x H x W 8-bit slices, windowed as the run's PNGs (evaluate reads those) -> Z x n_levels sigmoid outputs."""
    pixels = np.asarray(pixels)
    return _predict_offsets(run, len(pixels), lambda rows: pixels[rows], batch_size, z_mm)


@torch.no_grad()
def _predict_offsets(
    run: LoadedRun,
    n_slices: int,
    slices_8bit: Callable[[np.ndarray], np.ndarray],
    batch_size: int,
    z_mm: np.ndarray | None,
) -> np.ndarray:
    _require(run, "slice_selection")
    config = run.config
    try:
        rows = volume_context_rows(n_slices, z_mm, config.context_mm)
    except ValueError:
        raise BodycompError(
            f"{run.run_dir}: was trained with --context-mm {config.context_mm:g}; give z_mm per slice"
        ) from None
    if run.heads is not None and (z_mm is None or len(z_mm) != n_slices):
        raise BodycompError(f"{run.run_dir}: has a series head, which needs every slice's z_mm (one whole series)")
    n_levels = len(config.levels)
    outputs = np.empty((n_slices, n_levels), dtype=np.float32)
    features: list[np.ndarray] = []  # with a series head: the CNN's pooled features, which the head reads
    phases: list[np.ndarray] = []  # and its vertebral phase outputs, in runs that have them
    phase_columns = config.phase_columns
    for start in range(0, n_slices, batch_size):
        batch_rows = rows[start : start + batch_size]
        pixels = slices_8bit(batch_rows.ravel())
        stacked = pixels.reshape(*batch_rows.shape, *pixels.shape[-2:])  # B x channels x H x W
        images = selection_input(stacked, config.image_size).to(run.device)
        with _autocast(run):
            if run.heads is None:
                logits = run.model(images)[:, :n_levels]
                outputs[start : start + batch_size] = torch.sigmoid(logits.float()).cpu().numpy()
            else:
                logits, pooled = classifier_features(run.model, images)
                features.append(pooled.float().cpu().numpy())
                if phase_columns is not None:
                    phases.append(logits[:, phase_columns].float().cpu().numpy())
    if run.heads is None:
        return outputs
    # The head's offsets, in the form of the CNN's outputs, so the one slice-choice rule reads both alike.
    phase = np.concatenate(phases) if phase_columns is not None else None
    offsets = predict_offsets_mm(run.heads, np.asarray(z_mm), np.concatenate(features), phase)
    return outputs_from_offsets(offsets[:, :n_levels], config.threshold).astype(np.float32)
