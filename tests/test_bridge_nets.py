"""The original's U-Net and DenseNet rebuilt in PyTorch give the Keras models' outputs (Keras 3, torch backend)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 on torch: no TensorFlow needed
pytest.importorskip("keras")
pytest.importorskip("h5py")

from keras_originals import original_densenet, original_unet, randomise_batch_norm  # noqa: E402

from bodycomp_cli.io.keras_h5 import read_keras_model  # noqa: E402
from bodycomp_cli.nets import BridgeDenseNet, BridgeUNet  # noqa: E402
from bodycomp_cli.tasks.keras_import import map_weights, recognise  # noqa: E402

# Keras 3 on numpy 2 warns about its own __array__ on every weight it converts.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def imported(model, tmp_path: Path, **recognise_args):
    """Save MODEL as the original's full-model HDF5, import it; returns (task, torch model in eval mode)."""
    path = tmp_path / "model.hdf5"
    model.save(path)
    keras_model = read_keras_model(path)
    task = recognise(keras_model, {}, recognise_args.get("levels"), None)
    net = task.build_model()
    map_weights(keras_model, net)
    return task, net.eval()


def random_images(size: int, count: int = 2, seed: int = 0) -> np.ndarray:
    # Values in the original's input range (0-255), plus a few exact zeros and 255s as windowing gives.
    images = np.random.default_rng(seed).uniform(-20, 275, (count, size, size, 1))
    return np.clip(images, 0, 255).astype(np.float32)


def torch_input(images: np.ndarray, scale: float) -> torch.Tensor:
    """The original's 0-255 channels-last input as ours: channels first, on our scale (the net undoes it)."""
    return torch.from_numpy(images / np.float32(scale)).permute(0, 3, 1, 2)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"num_convs": 2, "activation": "elu", "classes": 3},
        {"compression": (4, 6, 8, 10), "decompression": (8, 6, 4), "activation": "tanh"},
    ],
)
def test_bridge_unet_gives_the_keras_unet_outputs(tmp_path, options):
    keras_model = original_unet(size=32, **options)
    randomise_batch_norm(keras_model)
    task, net = imported(keras_model, tmp_path)
    assert isinstance(net, BridgeUNet)
    assert task.run_config().thoracic == (options.get("classes") == 3)
    images = random_images(32)
    expected = np.asarray(keras_model.predict(images, verbose=0))
    with torch.no_grad():
        probabilities = torch.softmax(net(torch_input(images, 256)), dim=1).permute(0, 2, 3, 1).numpy()
    assert probabilities.shape == expected.shape
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)


@pytest.mark.parametrize(
    ("size", "options"),
    [
        (64, {}),  # even size: Keras pads the strided 7x7 conv 2 before and 3 after
        (65, {"blocks": 3, "layers_per_block": 1, "compression_rate": 0.6}),  # odd size: pooling floors
        (64, {"batch_norm": False, "activation": "elu", "outputs": 2}),
    ],
)
def test_bridge_densenet_gives_the_keras_densenet_outputs(tmp_path, size, options):
    import keras

    keras_model = original_densenet(size=size, **options)
    randomise_batch_norm(keras_model)
    levels = ["T5", "L3"] if options.get("outputs") == 2 else None
    task, net = imported(keras_model, tmp_path, levels=levels)
    assert isinstance(net, BridgeDenseNet)
    assert task.run_config().arch_options["use_batch_norm"] == options.get("batch_norm", True)
    # Compare before the sigmoid, where a saturated output cannot hide a difference.
    logits_model = keras.Model(keras_model.inputs, keras_model.layers[-2].output)
    images = random_images(size)
    expected = np.asarray(logits_model.predict(images, verbose=0))
    with torch.no_grad():
        logits = net(torch_input(images, 255)).numpy()
    assert logits.shape == expected.shape == (2, options.get("outputs", 1))
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_bridge_unet_default_options_are_the_originals():
    net = BridgeUNet(4)
    assert [m[0].out_channels for m in net.compression] == [16, 32, 64, 128, 256, 512]
    assert [m[0].out_channels for m in net.decompression] == [256, 128, 64, 32, 16]
    assert all(len(m) == 3 for m in net.compression)  # one conv per module (-N 1): conv, norm, activation
    assert net.final_conv.out_channels == 4


def test_bridge_densenet_default_widths_are_the_originals():
    net = BridgeDenseNet()
    # 16 initial filters, 12 layers x growth 12 = 144 new features per block, transitions at rate 0.5.
    assert net.initial_conv.out_channels == 16
    transitions = [m for m in net.stages if isinstance(m, torch.nn.Sequential)]
    assert [t[2].out_channels for t in transitions] == [80, 112, 128]
    assert net.dense.in_features == 144
    assert net(torch.zeros(1, 1, 256, 256)).shape == (1, 1)


def test_keras_initializers_have_the_keras_spread():
    from bodycomp_cli.nets.keras_layers import keras_initialize

    torch.manual_seed(0)
    kernel = torch.empty(64, 32, 3, 3)  # fan in 288, fan out 576
    keras_initialize(kernel, "glorot_uniform")
    limit = (6 / (288 + 576)) ** 0.5
    assert kernel.abs().max() <= limit and kernel.abs().max() > 0.99 * limit
    keras_initialize(kernel, "he_normal")
    assert abs(float(kernel.std()) - (2 / 288) ** 0.5) < 0.003  # the truncation is undone by Keras's divisor
    bias = torch.empty(100)
    keras_initialize(bias, "glorot_uniform")  # the original's DenseNet biases: limit sqrt(6 / (100 + 100))
    assert bias.abs().max() <= (6 / 200) ** 0.5
    keras_initialize(bias, "zeros")
    assert not bias.any()
