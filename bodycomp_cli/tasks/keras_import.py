"""import-keras: turn a model saved by the original Keras toolkit into a bodycomp run folder.

The layer list tells the task: the original U-Net names its layers (compression_I_conv_J, ..., final_conv),
the slice-selection DenseNet starts with initial_conv2D and ends in a Dense layer. The options of the
PyTorch rebuild (nets/) are read off the layers, the model is built, and the Keras layers that hold weights
are matched one by one, in order, with the PyTorch modules that hold weights (both are in data-flow order).
Neither network flattens a feature map (the DenseNet averages it globally), so no dense kernel needs its rows
reordered from Keras's channels-last flatten order.
Any layer that does not fit stops the import with its name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bodycomp_cli.core.runconfig import CONFIG_FILE
from bodycomp_cli.core.versions import versions
from bodycomp_cli.engine.checkpoint import BEST, save_checkpoint
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.atomic import atomic_output_dir, atomic_write_text
from bodycomp_cli.io.keras_h5 import KerasLayer, KerasModel, read_keras_model
from bodycomp_cli.nets import bridge_densenet, bridge_unet
from bodycomp_cli.nets.keras_layers import ACTIVATIONS, KERAS_BN_EPSILON
from bodycomp_cli.tasks.segmentation import SegmentationSettings, SegmentationTask
from bodycomp_cli.tasks.slice_selection import SliceSelectionSettings, SliceSelectionTask

# Layer kinds the two original networks are made of; anything else has no counterpart here.
SUPPORTED = {
    "InputLayer", "Conv2D", "BatchNormalization", "Activation", "MaxPooling2D", "UpSampling2D", "Concatenate",
    "AveragePooling2D", "GlobalAveragePooling2D", "Dense", "Dropout",
}  # fmt: skip
WEIGHTED = ("Conv2D", "BatchNormalization", "Dense")
ORIGINAL_THRESHOLD_MM = 10.0  # the original estimator's sigmoid scale


def _fail(layer: KerasLayer, why: str) -> BodycompError:
    return BodycompError(f"layer {layer.name!r} ({layer.class_name}): {why}")


def _check_layer(layer: KerasLayer) -> None:
    """Refuse a layer whose settings the PyTorch rebuild does not reproduce."""
    c = layer.config
    if layer.class_name not in SUPPORTED:
        raise _fail(layer, "has no counterpart in bridge-unet or bridge-densenet")
    if c.get("data_format", "channels_last") not in (None, "channels_last"):
        raise _fail(layer, f"data_format {c['data_format']!r}; only channels_last models can be imported")
    if layer.class_name == "Conv2D":
        if c.get("activation", "linear") != "linear":
            raise _fail(layer, f"activation {c['activation']!r} inside the conv; the original used separate layers")
        if c.get("padding") != "same" or tuple(c.get("dilation_rate", (1, 1))) != (1, 1) or c.get("groups", 1) != 1:
            raise _fail(layer, "only 'same' padding, no dilation and one group are supported")
    if layer.class_name == "BatchNormalization":
        axis = c.get("axis", -1)
        axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
        if axis not in (-1, 3) or not c.get("center", True) or not c.get("scale", True):
            raise _fail(layer, "only batch norm over channels with centre and scale is supported")
        if not np.isclose(float(c.get("epsilon", KERAS_BN_EPSILON)), KERAS_BN_EPSILON):
            raise _fail(layer, f"epsilon {c['epsilon']}; the rebuild uses Keras's default {KERAS_BN_EPSILON}")
    if layer.class_name == "Activation" and c.get("activation") not in (*ACTIVATIONS, "softmax"):
        raise _fail(layer, f"activation {c.get('activation')!r} is not supported")


def _input_size(model: KerasModel) -> tuple[int | None, int]:
    """(square image size or None, channels) from the InputLayer."""
    for layer in model.layers:
        if layer.class_name == "InputLayer":
            shape = layer.config.get("batch_shape") or layer.config.get("batch_input_shape")
            if not shape or len(shape) != 4:
                raise _fail(layer, f"input shape {shape}; a 2D image input (None, H, W, C) is expected")
            height, width, channels = shape[1:]
            if height != width:
                raise _fail(layer, f"input {height} x {width}; only square inputs are supported")
            return height, int(channels)
    raise BodycompError(f"{model.path}: the model has no InputLayer")


def _by_name(model: KerasModel) -> dict[str, KerasLayer]:
    return {layer.name: layer for layer in model.layers}


def _unet_options(model: KerasModel) -> dict[str, Any]:
    layers = _by_name(model)

    def filters(prefix: str) -> list[int]:
        found, i = [], 0
        while f"{prefix}_{i}_conv_0" in layers:
            found.append(int(layers[f"{prefix}_{i}_conv_0"].config["filters"]))
            i += 1
        return found

    if "compression_center_conv_0" not in layers:
        raise _fail(layers["final_conv"], "a U-Net without the original's compression_center module")
    num_convs = sum(bool(re.fullmatch(r"compression_center_conv_\d+", name)) for name in layers)
    act_layer = layers.get("compression_center_activation_0")
    return {
        "compression_channels": [*filters("compression"), int(layers["compression_center_conv_0"].config["filters"])],
        "decompression_channels": filters("decompression"),
        "num_convs": num_convs,
        "activation_name": act_layer.config["activation"] if act_layer else "relu",
        **bridge_unet.ORIGINAL_INPUT,
    }


def _densenet_options(model: KerasModel, args: dict[str, Any]) -> dict[str, Any]:
    layers = model.layers
    convs = [layer for layer in layers if layer.class_name == "Conv2D" and layer.name != "initial_conv2D"]
    blocks = 1 + sum(layer.class_name == "AveragePooling2D" for layer in layers)
    growth_convs = [layer for layer in convs if tuple(layer.config["kernel_size"]) == (3, 3)]
    if not growth_convs or len(growth_convs) % blocks:
        raise _fail(convs[0] if convs else layers[-1], "the dense blocks do not have the original's layout")
    layers_per_block = len(growth_convs) // blocks
    growth = int(growth_convs[0].config["filters"])
    initial = int(_by_name(model)["initial_conv2D"].config["filters"])
    compression = args.get("compression_rate")
    if compression is None:  # the first transition's width is int(rate * (initial + layers x growth))
        transitions = [i for i, layer in enumerate(layers) if layer.class_name == "AveragePooling2D"]
        transition_conv = next((x for x in reversed(layers[: transitions[0]]) if x.class_name == "Conv2D"), None)
        total = initial + layers_per_block * growth
        compression = int(transition_conv.config["filters"]) / total if transition_conv else 0.5
    # The activation before the global average is -A; the dense blocks but the last always used relu.
    pooled = next(i for i, layer in enumerate(layers) if layer.class_name == "GlobalAveragePooling2D")
    activation = next(x for x in reversed(layers[:pooled]) if x.class_name == "Activation").config["activation"]
    return {
        "layers_per_block": layers_per_block,
        "blocks": blocks,
        "initial_filters": initial,
        "growth_rate": growth,
        "compression_rate": float(compression),
        "activation_name": activation,
        "use_batch_norm": any(layer.class_name == "BatchNormalization" for layer in layers),
        **bridge_densenet.ORIGINAL_INPUT,
    }


KERAS_DEFAULTS = {"interpolation": "nearest", "padding": "valid"}  # what older Keras left out of a layer's config


def _pair(value: Any) -> tuple:
    return tuple(value) if isinstance(value, list | tuple) else (value, value)


def _check_plumbing(keras: KerasModel, expected: dict[str, tuple[int, dict[str, Any]]]) -> None:
    """The weightless layers the rebuild hard-codes: how many of each kind, and their sizes and strides.

    EXPECTED maps a class name to (count, {config key: required value}). Every conv has stride 1 but the
    DenseNet's initial_conv2D, which has stride 2.
    """
    seen: dict[str, int] = dict.fromkeys(expected, 0)
    for layer in keras.layers:
        if layer.class_name == "Conv2D":
            want = (2, 2) if layer.name == "initial_conv2D" else (1, 1)
            if _pair(layer.config.get("strides", 1)) != want:
                raise _fail(layer, f"strides {layer.config.get('strides')}; the original uses {want}")
        if layer.class_name not in expected:
            continue
        seen[layer.class_name] += 1
        count, required = expected[layer.class_name]
        if seen[layer.class_name] > count:
            raise _fail(layer, f"one {layer.class_name} more than the original's {count}")
        for key, value in required.items():
            found = layer.config.get(key, KERAS_DEFAULTS.get(key))
            if (_pair(found) if isinstance(value, tuple) else found) != value:
                raise _fail(layer, f"{key} {found}; the original uses {value}")
    for class_name, (count, _) in expected.items():
        if seen[class_name] != count:
            raise BodycompError(f"{keras.path}: {seen[class_name]} {class_name} layers where the original has {count}")


def _unet_plumbing(options: dict[str, Any]) -> dict[str, tuple[int, dict[str, Any]]]:
    downs, ups = len(options["compression_channels"]) - 1, len(options["decompression_channels"])
    return {
        "MaxPooling2D": (downs, {"pool_size": (2, 2), "padding": "valid"}),
        "UpSampling2D": (ups, {"size": (2, 2), "interpolation": "nearest"}),
        "Concatenate": (ups, {}),
    }


def _densenet_plumbing(options: dict[str, Any]) -> dict[str, tuple[int, dict[str, Any]]]:
    blocks, layers = options["blocks"], options["layers_per_block"]
    return {
        "MaxPooling2D": (1, {"pool_size": (3, 3), "strides": (2, 2), "padding": "valid"}),
        "AveragePooling2D": (blocks - 1, {"pool_size": (2, 2), "strides": (2, 2), "padding": "valid"}),
        "GlobalAveragePooling2D": (1, {}),
        "Concatenate": (blocks * (layers - 1 + (layers > 1)), {}),  # each later layer's input, each block's output
        "UpSampling2D": (0, {}),
    }


def _final_activation(model: KerasModel) -> KerasLayer:
    activations = [layer for layer in model.layers if layer.class_name == "Activation"]
    if not activations:
        raise BodycompError(f"{model.path}: the model has no output activation layer")
    return activations[-1]


def _weighted_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d | nn.Linear)]


def _activation_modules(model: nn.Module) -> list[nn.Module]:
    kinds = tuple(ACTIVATIONS.values())
    return [m for m in model.modules() if isinstance(m, kinds)]


def _copy(layer: KerasLayer, module: nn.Module) -> None:
    """Copy one Keras layer's arrays into the matching PyTorch module, converting the layouts."""
    w = layer.weights
    expected_kind = {nn.Conv2d: "Conv2D", nn.BatchNorm2d: "BatchNormalization", nn.Linear: "Dense"}
    kind = next(k for cls, k in expected_kind.items() if isinstance(module, cls))
    if layer.class_name != kind:
        raise _fail(layer, f"found where the rebuild expects a {kind} layer")
    try:
        if kind == "Conv2D":  # Keras kernels are H x W x in x out; torch's out x in x H x W
            tensors = {"weight": w["kernel"].transpose(3, 2, 0, 1), "bias": w["bias"]}
        elif kind == "Dense":  # Keras in x out; torch out x in
            tensors = {"weight": w["kernel"].T, "bias": w["bias"]}
        else:
            tensors = {
                "weight": w["gamma"], "bias": w["beta"],
                "running_mean": w["moving_mean"], "running_var": w["moving_variance"],
            }  # fmt: skip
    except KeyError as missing:
        raise _fail(layer, f"has no {missing.args[0]!r} weights (found: {', '.join(w) or 'none'})") from None
    state = module.state_dict()
    for key, array in tensors.items():
        if tuple(array.shape) != tuple(state[key].shape):
            raise _fail(layer, f"{key} shape {tuple(array.shape)} where the rebuild has {tuple(state[key].shape)}")
        state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    module.load_state_dict(state)


def map_weights(keras: KerasModel, model: nn.Module) -> None:
    """Copy every weighted Keras layer into MODEL, in order; refuse the first layer that does not fit."""
    layers = [layer for layer in keras.layers if layer.class_name in WEIGHTED]
    modules = _weighted_modules(model)
    for layer, module in zip(layers, modules, strict=False):
        _copy(layer, module)
    if len(layers) > len(modules):
        raise _fail(layers[len(modules)], "is one layer more than the rebuild has")
    if len(layers) < len(modules):
        raise BodycompError(f"{keras.path}: has {len(layers)} weighted layers where the rebuild has {len(modules)}")
    keras_acts = [layer for layer in keras.layers if layer.class_name == "Activation"][:-1]  # the last is the output
    for layer, module in zip(keras_acts, _activation_modules(model), strict=False):
        if ACTIVATIONS.get(layer.config["activation"]) is not type(module):
            raise _fail(layer, f"activation {layer.config['activation']!r} where the rebuild has {module}")


def _read_args(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    try:
        args = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BodycompError(f"{path}: not valid JSON ({error})") from None
    return args if isinstance(args, dict) else {}


def recognise(
    keras: KerasModel, args: dict[str, Any], levels: list[str] | None, threshold: float | None
) -> SegmentationTask | SliceSelectionTask:
    """The task (with the PyTorch architecture's options) that a Keras model of the original toolkit is."""
    for layer in keras.layers:
        _check_layer(layer)
    size, channels = _input_size(keras)
    if channels != 1:
        input_layer = next(x for x in keras.layers if x.class_name == "InputLayer")
        raise _fail(input_layer, f"{channels} input channels; the original networks take one (a CT slice)")
    names = _by_name(keras)
    output = _final_activation(keras)
    if "final_conv" in names:
        classes = int(names["final_conv"].config["filters"])
        if classes not in (3, 4):
            raise _fail(names["final_conv"], f"{classes} classes; the original segments 4 (or 3 for thoracic)")
        if output.config["activation"] != "softmax":
            raise _fail(output, "a segmentation output other than softmax")
        options = _unet_options(keras)
        _check_plumbing(keras, _unet_plumbing(options))
        settings = SegmentationSettings(
            arch="bridge-unet", thoracic=classes == 3, image_size=size or 512, arch_options=options
        )
        return SegmentationTask(settings)
    if "initial_conv2D" in names and any(layer.class_name == "Dense" for layer in keras.layers):
        outputs = int(next(x for x in keras.layers if x.class_name == "Dense").config["units"])
        if output.config["activation"] != "sigmoid":
            raise _fail(output, "a linear z-position output; only the sigmoid slice-selection models are supported")
        levels = levels or args.get("levels") or (["L3"] if outputs == 1 else None)
        if levels is None or len(levels) != outputs:
            raise BodycompError(f"{keras.path}: the model predicts {outputs} levels; name them with -L (e.g. -L T5 L3)")
        threshold = threshold if threshold is not None else float(args.get("threshold") or ORIGINAL_THRESHOLD_MM)
        options = _densenet_options(keras, args)
        _check_plumbing(keras, _densenet_plumbing(options))
        settings = SliceSelectionSettings(
            levels=list(levels), arch="bridge-densenet", threshold_mm=threshold, image_size=size or 256,
            arch_options=options,
        )  # fmt: skip
        return SliceSelectionTask(settings)
    first = next((x for x in keras.layers if x.class_name != "InputLayer"), keras.layers[0])
    raise _fail(first, "starts neither the original U-Net (compression_0_conv_0) nor its DenseNet (initial_conv2D)")


def import_keras(
    model_path: Path,
    models_dir: Path,
    name: str,
    architecture: Path | None = None,
    args_path: Path | None = None,
    levels: list[str] | None = None,
    threshold: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert MODEL_PATH (a Keras full model, or weights with architecture.json) into MODELS_DIR/NAME.

    The run folder holds config.json and checkpoint_best.pt, like a trained run. Example:
    import_keras(Path("segmentation_unet_d5_i16_c1.hdf5"), Path("models"), "l3_seg")
    """
    model_path, run_dir = Path(model_path), Path(models_dir) / name
    if run_dir.exists() and not overwrite:
        raise BodycompError(f"{run_dir}: already exists; choose another -a NAME or add --overwrite")
    keras = read_keras_model(model_path, architecture)
    args = _read_args(args_path if args_path is not None else model_path.parent / "args.json")
    task = recognise(keras, args, levels, threshold)
    model = task.build_model()
    map_weights(keras, model)
    config = task.run_config().with_training(
        name=name,
        imported_from={"path": str(model_path.resolve()), "keras_version": keras.keras_version},
        versions=versions(),
    )
    checkpoint = {
        "task": task.name, "config": config.to_dict(), "epoch": 0, "model": model.state_dict(),
        "history": [], "best": {"metric": task.best_metric, "value": None, "epoch": None},
    }  # fmt: skip
    # Written beside the target and swapped in at the end: a failure or a kill leaves no half-made run folder.
    with atomic_output_dir(run_dir, overwrite=overwrite) as staging:
        atomic_write_text(staging / CONFIG_FILE, config.to_json())
        save_checkpoint(staging / BEST, checkpoint)
    return run_dir
