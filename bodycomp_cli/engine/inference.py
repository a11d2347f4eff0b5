"""Load a trained run and apply it: the contract that `estimate` and `evaluate` code against."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bodycomp_cli.core.amp import choose_amp
from bodycomp_cli.engine.checkpoint import BEST, LAST, load_checkpoint
from bodycomp_cli.engine.devices import strip_prefix
from bodycomp_cli.errors import BodycompError, reason
from bodycomp_cli.io.windowing import window_hu, window_hu_unit

CHECKPOINTS = {"best": BEST, "last": LAST}


@dataclass
class LoadedRun:
    model: torch.nn.Module  # in eval mode, on `device`
    config: dict[str, Any]  # the run's config.json
    task_name: str  # "segmentation" or "slice_selection"
    device: torch.device
    run_dir: Path
    amp: bool = True  # autocast on GPUs as core/amp.py decides; estimate/evaluate --no-amp turns it off


def load_run(run_dir: Path, device: str | torch.device = "cpu", which: str = "best") -> LoadedRun:
    """Rebuild a run's model from config.json and checkpoint_{which}.pt (which: best or last).

    Example: run = load_run(Path("models/seg_v1")); labels = predict_segmentation(run, volume.hu)
    """
    from bodycomp_cli.tasks import task_from_config

    run_dir = Path(run_dir)
    if which not in CHECKPOINTS:
        raise BodycompError(f"checkpoint {which!r}: valid choices: {', '.join(CHECKPOINTS)}")
    config_path, checkpoint_path = run_dir / "config.json", run_dir / CHECKPOINTS[which]
    if not config_path.is_file():
        raise BodycompError(f"{run_dir}: not a trained run (no config.json)")
    if not checkpoint_path.is_file():
        raise BodycompError(f"{run_dir}: has no {checkpoint_path.name} (train it first, or pick another run)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BodycompError(f"{config_path}: not valid JSON ({error})") from None
    device = torch.device(device)
    try:  # a config.json edited or damaged by hand can name an unknown model or lack a key
        model = task_from_config(config).build_model()
    except BodycompError:
        raise
    except Exception as error:
        raise BodycompError(
            f"{config_path}: cannot rebuild the model ({type(error).__name__}: {reason(error)})"
        ) from None
    checkpoint = load_checkpoint(checkpoint_path, map_location=device)
    try:
        model.load_state_dict(strip_prefix(checkpoint["model"]))
    except (KeyError, TypeError, RuntimeError) as error:  # weights of another model, or a damaged dict
        raise BodycompError(
            f"{checkpoint_path}: weights do not fit the model of config.json ({reason(error)})"
        ) from None
    model.to(device).eval()
    return LoadedRun(model, config, config["task"], device, run_dir)


def _require(run: LoadedRun, task: str) -> None:
    if run.task_name != task:
        raise BodycompError(f"{run.run_dir}: is a {run.task_name} run, not a {task} run")


def _resize(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    size = (size, size) if isinstance(size, int) else size
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def _autocast(run: LoadedRun):
    # The engine's one AMP decision (core/amp.py); the CPU path stays full precision, so exact.
    return choose_amp(run.device, run.amp).autocast()


@torch.no_grad()
def predict_segmentation(run: LoadedRun, hu_slices: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """N x H x W raw HU -> N x H x W uint8 labels at the input size (window as trained, argmax of logits)."""
    _require(run, "segmentation")
    hu_slices = np.asarray(hu_slices)
    if hu_slices.ndim == 2:
        hu_slices = hu_slices[None]
    window = run.config["window"]
    size = int(run.config["image_size"])
    labels = np.empty(hu_slices.shape, dtype=np.uint8)
    for start in range(0, len(hu_slices), batch_size):
        chunk = window_hu_unit(hu_slices[start : start + batch_size], window["level"], window["width"])
        images = _resize(torch.from_numpy(chunk)[:, None].to(run.device), size)
        with _autocast(run):
            logits = run.model(images)
        # Labels at the model's size go back to the slice's size with nearest (as the issue asks), so
        # every output pixel carries a label the model chose; nearest-exact keeps pixel centres aligned.
        predicted = logits.argmax(dim=1, keepdim=True).to(torch.uint8)
        if tuple(predicted.shape[-2:]) != tuple(hu_slices.shape[-2:]):
            predicted = F.interpolate(predicted, size=hu_slices.shape[-2:], mode="nearest-exact")
        labels[start : start + batch_size] = predicted[:, 0].cpu().numpy()
    return labels


@torch.no_grad()
def predict_slice_offsets(
    run: LoadedRun, hu_volume: np.ndarray, batch_size: int = 32, z_mm: np.ndarray | None = None
) -> np.ndarray:
    """Z x H x W raw HU -> Z x n_levels sigmoid outputs (the model saw 8-bit windowed PNGs, so window to uint8).

    A model trained with --context-mm also needs each slice's z_mm (Z,), to find its neighbours.
    """
    _require(run, "slice_selection")
    window = run.config["window"]
    size = int(run.config["image_size"])
    context_mm = float(run.config.get("context_mm") or 0.0)
    hu_volume = np.asarray(hu_volume)
    if context_mm > 0:
        from bodycomp_cli.data.slices import context_rows

        if z_mm is None or len(z_mm) != len(hu_volume):
            raise BodycompError(f"{run.run_dir}: was trained with --context-mm {context_mm:g}; give z_mm per slice")
        rows = context_rows(np.zeros(len(hu_volume)), np.asarray(z_mm, dtype=np.float64), context_mm)
    else:
        rows = np.arange(len(hu_volume))[:, None]
    outputs = np.empty((len(hu_volume), len(run.config["levels"])), dtype=np.float32)
    for start in range(0, len(hu_volume), batch_size):
        batch_rows = rows[start : start + batch_size]
        pixels = window_hu(hu_volume[batch_rows.ravel()], window["level"], window["width"])
        pixels = pixels.reshape(*batch_rows.shape, *pixels.shape[-2:])  # B x channels x H x W
        images = torch.from_numpy(pixels.astype(np.float32) / np.float32(255.0)).to(run.device)
        with _autocast(run):
            logits = run.model(_resize(images, size))
        outputs[start : start + batch_size] = torch.sigmoid(logits.float()).cpu().numpy()
    return outputs
