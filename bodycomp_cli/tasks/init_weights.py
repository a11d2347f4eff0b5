"""--init-weights RUN_DIR|MODEL.hdf5: the weights a new run starts from (the original's -w/--load_weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bodycomp_cli.core.runconfig import CONFIG_FILE, WEIGHT_FIELDS, read_run_config
from bodycomp_cli.engine.checkpoint import BEST, LAST, load_checkpoint
from bodycomp_cli.engine.warm_start import WarmStart
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.keras_h5 import read_keras_model
from bodycomp_cli.tasks.keras_import import map_weights, recognise

KERAS_SUFFIXES = (".hdf5", ".h5")
NOT_SHAPES = ("initializer",)  # arch options that only say how a fresh model starts


def _model_keys(config: dict[str, Any]) -> dict[str, Any]:
    keys = {key: config.get(key) for key in WEIGHT_FIELDS}
    keys["arch_options"] = {k: v for k, v in (keys["arch_options"] or {}).items() if k not in NOT_SHAPES}
    return keys


def _check_same_model(source: dict[str, Any], target: dict[str, Any], path: Path) -> None:
    source, target = _model_keys(source), _model_keys(target)
    for key in WEIGHT_FIELDS:
        if source[key] != target[key]:
            raise BodycompError(
                f"--init-weights {path}: has {key}={source[key]!r}, this run {target[key]!r}; "
                "train with the same architecture and options"
            )


def _run_weights(run_dir: Path, task: Any) -> dict[str, torch.Tensor]:
    checkpoint_path = next((run_dir / n for n in (BEST, LAST) if (run_dir / n).is_file()), None)
    if checkpoint_path is None or not (run_dir / CONFIG_FILE).is_file():
        raise BodycompError(f"--init-weights {run_dir}: not a run folder (needs config.json and a checkpoint)")
    _check_same_model(read_run_config(run_dir).to_dict(), task.run_config().to_dict(), run_dir)
    return load_checkpoint(checkpoint_path)["model"]


def _keras_weights(path: Path, task: Any) -> dict[str, torch.Tensor]:
    keras = read_keras_model(path)
    target = task.run_config().to_dict()
    source = recognise(keras, {}, target.get("levels"), target.get("threshold"))
    _check_same_model(source.run_config().to_dict(), target, path)
    model = source.build_model()
    map_weights(keras, model)
    return model.state_dict()


def warm_start(init_weights: Path | None, initial_epoch: int = 0) -> WarmStart:
    """The WarmStart for --init-weights (a run folder or a Keras HDF5 model of the original) and -i."""
    if init_weights is None:
        return WarmStart(initial_epoch=initial_epoch)
    path = Path(init_weights)
    if path.is_dir():
        return WarmStart(str(path), lambda task: _run_weights(path, task), initial_epoch)
    if path.suffix.lower() in KERAS_SUFFIXES and path.is_file():
        return WarmStart(str(path), lambda task: _keras_weights(path, task), initial_epoch)
    raise BodycompError(f"--init-weights {path}: expected a run folder or a Keras .hdf5/.h5 model")
