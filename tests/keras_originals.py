"""The original toolkit's two networks, built with Keras 3 on its torch backend (no TensorFlow), for import tests.

Written from the original's description (layer order, names, defaults), at tiny sizes. Import this module only
after pytest.importorskip("keras"): it sets KERAS_BACKEND first.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
from keras import layers  # noqa: E402


def original_unet(
    size: int = 32,
    classes: int = 4,
    compression=(4, 8, 16),
    decompression=(8, 4),
    num_convs: int = 1,
    activation: str = "relu",
) -> keras.Model:
    """U-Net with the original's layer names: compression_I_conv_J/_norm_J/_activation_J, ..., final_conv."""

    def module(x, channels, name):
        for j in range(num_convs):
            x = layers.Conv2D(channels, 3, padding="same", name=f"{name}_conv_{j}")(x)
            x = layers.BatchNormalization(name=f"{name}_norm_{j}")(x)
            x = layers.Activation(activation, name=f"{name}_activation_{j}")(x)
        return x

    inputs = keras.Input((size, size, 1), name="image_input")
    x, skips = inputs, []
    for i, channels in enumerate(compression[:-1]):
        x = module(x, channels, f"compression_{i}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"compression_{i}_pool")(x)
    x = module(x, compression[-1], "compression_center")
    for i, channels in enumerate(decompression):
        up = layers.UpSampling2D(2, name=f"decompression_{i}_upsample")(x)
        x = layers.Concatenate(axis=3, name=f"decompression_{i}_concat")([up, skips[-1 - i]])
        x = module(x, channels, f"decompression_{i}")
    x = layers.Conv2D(classes, 1, padding="same", name="final_conv")(x)
    return keras.Model(inputs, layers.Activation("softmax", name="segmentation_output")(x))


def original_densenet(
    size: int = 64,
    outputs: int = 1,
    layers_per_block: int = 2,
    blocks: int = 2,
    initial_filters: int = 8,
    growth_rate: int = 4,
    compression_rate: float = 0.5,
    activation: str = "relu",
    batch_norm: bool = True,
) -> keras.Model:
    """The slice-selection DenseNet: auto-named layers except initial_conv2D, sigmoid output."""

    def norm_act(x, act):
        if batch_norm:
            x = layers.BatchNormalization(axis=3)(x)
        return layers.Activation(act)(x)

    inputs = keras.Input((size, size, 1))
    x = layers.Conv2D(initial_filters, 7, strides=2, padding="same", name="initial_conv2D")(inputs)
    x = layers.MaxPooling2D(3, strides=2)(x)
    count = initial_filters
    for b in range(blocks):
        act = activation if b == blocks - 1 else "relu"  # the original passes -A to the last block only
        new = []
        for _ in range(layers_per_block):
            y = layers.Concatenate(axis=-1)([x, *new]) if new else x
            y = layers.Conv2D(4 * growth_rate, 1, padding="same")(norm_act(y, act))
            new.append(layers.Conv2D(growth_rate, 3, padding="same")(norm_act(y, act)))
            count += growth_rate
        x = layers.Concatenate(axis=-1)(new) if len(new) > 1 else new[0]
        if b < blocks - 1:
            count = int(compression_rate * count)
            x = layers.Conv2D(count, 1, padding="same")(norm_act(x, activation))
            x = layers.AveragePooling2D(2, strides=2)(x)
    x = layers.GlobalAveragePooling2D()(norm_act(x, activation))
    return keras.Model(inputs, layers.Activation("sigmoid")(layers.Dense(outputs)(x)))


def randomise_batch_norm(model: keras.Model, seed: int = 0) -> None:
    """Give every batch norm non-trivial statistics, so the import of all four arrays is tested."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0, 0.2, beta.shape),
                    rng.normal(0, 0.2, mean.shape),
                    rng.uniform(0.5, 2.0, var.shape),
                ]
            )
