"""The cores we define ourselves rather than take from keras.applications: reference study 002's
small CNN and reference study 004's GoogLeNet (Inception v1) with the trunks of its auxiliary classifiers."""

from __future__ import annotations

import keras
from keras import layers


def small_cnn(shape: tuple[int, int, int]) -> keras.Model:
    """Reference study 002's convolutional part: three 3x3 conv (16/32/64) + 2x2 max-pool blocks.

    The study's Flatten + Dense(512, relu) are the experiment's ``pooling: flatten`` and
    ``head_units: 512``, so the base is the convolutional part alone, as for the other models.
    """
    inputs = keras.Input(shape)
    x = inputs
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    return keras.Model(inputs, x, name="cnn")


def _conv(filters: int, size: int, name: str, strides: int = 1, bias: float | None = None) -> layers.Layer:
    # Reference study 004 starts the stem's first convolution and every inception branch with bias 0.2
    # (it has no batch normalisation; the positive bias keeps ReLUs alive early on).
    return layers.Conv2D(filters, size, strides=strides, padding="same", activation="relu", name=name,
                         bias_initializer=keras.initializers.Constant(bias) if bias is not None else "zeros")


def _inception(x, f1: int, f3r: int, f3: int, f5r: int, f5: int, fp: int, name: str):
    """One inception module: 1x1, 1x1->3x3, 1x1->5x5 and 3x3 max-pool->1x1 branches, concatenated."""
    b1 = _conv(f1, 1, f"{name}_1x1", bias=0.2)(x)
    b3 = _conv(f3, 3, f"{name}_3x3", bias=0.2)(_conv(f3r, 1, f"{name}_3x3_reduce", bias=0.2)(x))
    b5 = _conv(f5, 5, f"{name}_5x5", bias=0.2)(_conv(f5r, 1, f"{name}_5x5_reduce", bias=0.2)(x))
    bp = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    bp = _conv(fp, 1, f"{name}_pool_proj", bias=0.2)(bp)
    return layers.Concatenate(name=name)([b1, b3, b5, bp])


def googlenet(shape: tuple[int, int, int]) -> keras.Model:
    """Reference study 004's Inception v1 up to inception_5b; extra outputs: the maps after 4a and 4d (aux inputs).

    The main classifier (global average pooling, dropout 0.4, softmax) is the experiment's
    ``pooling: avg``, ``head_dropout: 0.4``, ``head: dense``.
    """
    inputs = keras.Input(shape)
    x = _conv(64, 7, "conv1_7x7_s2", strides=2, bias=0.2)(inputs)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_3x3_s2")(x)
    x = _conv(64, 1, "conv2_3x3_reduce")(x)
    x = _conv(192, 3, "conv2_3x3")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2_3x3_s2")(x)
    x = _inception(x, 64, 96, 128, 16, 32, 32, "inception_3a")
    x = _inception(x, 128, 128, 192, 32, 96, 64, "inception_3b")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool3_3x3_s2")(x)
    aux1 = x = _inception(x, 192, 96, 208, 16, 48, 64, "inception_4a")
    x = _inception(x, 160, 112, 224, 24, 64, 64, "inception_4b")
    x = _inception(x, 128, 128, 256, 24, 64, 64, "inception_4c")
    aux2 = x = _inception(x, 112, 144, 288, 32, 64, 64, "inception_4d")
    x = _inception(x, 256, 160, 320, 32, 128, 128, "inception_4e")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool4_3x3_s2")(x)
    x = _inception(x, 256, 160, 320, 32, 128, 128, "inception_5a")
    x = _inception(x, 384, 192, 384, 48, 128, 128, "inception_5b")
    return keras.Model(inputs, [x, aux1, aux2], name="googlenet")


def googlenet_aux_trunk(feature_map: keras.KerasTensor, name: str) -> keras.KerasTensor:
    """Reference study 004's auxiliary classifier up to its softmax: avg-pool 5x5/3, 1x1 conv 128, dense 1024,
    dropout 0.7.

    At 224x224 the map is 14x14 and the pool leaves 4x4, as in the paper; a smaller map (small
    test images) pools over at most its own size, so any input from min_size up works.
    """
    height, width = feature_map.shape[1], feature_map.shape[2]
    x = layers.AveragePooling2D((min(5, height), min(5, width)), strides=3, name=f"{name}_pool")(feature_map)
    x = _conv(128, 1, f"{name}_conv")(x)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, activation="relu", name=f"{name}_fc")(x)
    return layers.Dropout(0.7, name=f"{name}_dropout")(x)
