"""Read a model the original Keras toolkit saved: its layer list (config) and each layer's weight arrays.

Two layouts, both Keras's legacy HDF5 format:
- a full model (`model.save`), with the config in the root attribute `model_config` and the weights under
  `model_weights/`, as the original's estimator loads them;
- a weights file (`model.save_weights`, the original's `weights-EE-LOSS.hdf5`), whose layer list comes from
  the `architecture.json` the original wrote beside it.
Each layer group lists its arrays in the attribute `weight_names` ("conv2d/kernel:0" in Keras 2, "c/kernel" in
Keras 3); they are keyed here by the last part without the ":0" ("kernel", "bias", "gamma", "moving_mean", ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bodycomp_cli.errors import BodycompError


@dataclass
class KerasLayer:
    name: str
    class_name: str  # Conv2D, BatchNormalization, Dense, Activation, ...
    config: dict[str, Any]
    weights: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class KerasModel:
    path: Path
    layers: list[KerasLayer]  # in the model's order, which for these networks is the order of the data flow
    keras_version: str | None


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _layer_list(model_config: dict[str, Any], source: Path) -> list[dict[str, Any]]:
    layers = model_config.get("config", {}).get("layers") if isinstance(model_config, dict) else None
    if not isinstance(layers, list):
        raise BodycompError(f"{source}: the model config has no layer list (not a Keras functional model)")
    return layers


def _weights(group: Any) -> dict[str, np.ndarray]:
    arrays = {}
    for full_name in group.attrs.get("weight_names", []):
        full_name = _text(full_name)
        short = full_name.rsplit("/", 1)[-1].split(":", 1)[0]
        arrays[short] = np.asarray(group[full_name][()])
    return arrays


def read_keras_model(path: Path, architecture: Path | None = None) -> KerasModel:
    """Layers and weights of a Keras HDF5 model; a weights-only file needs ARCHITECTURE (default: beside it)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise BodycompError(f"{path}: no such file")
    try:
        h5 = h5py.File(path, "r")
    except OSError:
        raise BodycompError(f"{path}: not an HDF5 file (a Keras .hdf5/.h5 model is expected)") from None
    with h5:
        if "model_config" in h5.attrs:
            config, source, weights_root = json.loads(_text(h5.attrs["model_config"])), path, h5.get("model_weights")
        elif "layer_names" in h5.attrs:
            source = Path(architecture) if architecture is not None else path.parent / "architecture.json"
            if not source.is_file():
                raise BodycompError(
                    f"{path}: holds weights only and {source} does not exist; give the model's architecture.json "
                    "with --architecture"
                )
            try:
                config, weights_root = json.loads(source.read_text()), h5
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise BodycompError(f"{source}: not valid JSON ({error})") from None
        elif "layers" in h5:
            raise BodycompError(
                f"{path}: a Keras 3 .weights.h5 file; save the model with model.save('model.h5') and import that"
            )
        else:
            raise BodycompError(f"{path}: neither a Keras model (no model_config) nor Keras weights (no layer_names)")
        if weights_root is None:
            raise BodycompError(f"{path}: a Keras model saved without its weights")
        layers = []
        for entry in _layer_list(config, source):
            layer_config = entry.get("config", {})
            name = _text(layer_config.get("name", entry.get("name", "")))
            group = weights_root.get(name)
            layers.append(
                KerasLayer(name, entry.get("class_name", "?"), layer_config, _weights(group) if group else {})
            )
        version = h5.attrs.get("keras_version")
        return KerasModel(path, layers, _text(version) if version is not None else None)
