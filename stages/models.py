"""The model registry: each entry builds a base (preprocessing + convolutional core -> features).

Every base takes raw uint8-range RGB pixels and does its own preprocessing, so training, evaluation
and serving cannot disagree about it. Only ``keras`` and ``keras.ops`` are used, so the same code
runs on TensorFlow (the default backend) and on JAX.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
from keras import layers

from stages.config import ConfigError
from stages.registry import Registry

KERAS_WEIGHTS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class ImagenetWeights:
    """Keras' published no-top ImageNet weights for a core (file name, md5 from Keras' own source)."""

    path: str  # relative to KERAS_WEIGHTS_BASE
    md5: str

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ModelSpec:
    # (input_shape, pooling) -> the core whose weights a weights file holds
    build_core: Callable[[tuple[int, int, int], str], keras.Model]
    preprocess: Callable[[], keras.layers.Layer]
    min_size: int  # smallest height/width the core accepts
    imagenet: ImagenetWeights | None = None


MODELS: Registry[ModelSpec] = Registry("model")


@keras.saving.register_keras_serializable(package="transferbench")
class CaffePreprocess(layers.Layer):
    """VGG's 'caffe' preprocessing: RGB -> BGR, minus the ImageNet channel means, no scaling."""

    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, x):
        x = keras.ops.flip(keras.ops.cast(x, self.compute_dtype), axis=-1)
        return x - keras.ops.convert_to_tensor(self.MEAN_BGR, dtype=self.compute_dtype)


def _pooling_layer(pooling: str) -> keras.layers.Layer:
    return layers.GlobalMaxPooling2D() if pooling == "max" else layers.GlobalAveragePooling2D()


MODELS.register("xception")(ModelSpec(
    build_core=lambda shape, pooling: keras.applications.Xception(
        include_top=False, weights=None, input_shape=shape, pooling=pooling),
    # Xception was trained on [-1, 1] inputs (the seed fed it [0, 1]).
    preprocess=lambda: layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess"),
    min_size=71,
    imagenet=ImagenetWeights(
        "xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "b0042744bf5b25fce3cb969f33bebb97"),
))

MODELS.register("vgg16")(ModelSpec(
    build_core=lambda shape, pooling: keras.applications.VGG16(
        include_top=False, weights=None, input_shape=shape, pooling=pooling),
    preprocess=lambda: CaffePreprocess(name="preprocess"),
    min_size=32,
    imagenet=ImagenetWeights(
        "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "6d6bbae143d832006294945121d1f1fc"),
))


def _small_cnn(shape: tuple[int, int, int], pooling: str) -> keras.Model:
    """Seed 002's network: three 3x3 conv (16/32/64) + 2x2 max-pool blocks, then Dense(512)."""
    inputs = keras.Input(shape)
    x = inputs
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    # The seed flattens; `pooling` is accepted for a uniform signature but a small CNN keeps
    # its spatial layout, as in the seed.
    x = layers.Flatten()(x)
    x = layers.Dense(512, activation="relu")(x)
    return keras.Model(inputs, x, name="cnn")


MODELS.register("cnn")(ModelSpec(
    build_core=_small_cnn,
    preprocess=lambda: layers.Rescaling(1 / 255.0, name="preprocess"),
    min_size=22,  # three (conv 3x3 valid, pool 2) blocks leave at least 1x1
))


def check_input_shape(name: str, shape: tuple[int, int, int]) -> None:
    spec = MODELS.get(name)
    if min(shape[0], shape[1]) < spec.min_size:
        raise ConfigError(f"image size {shape[1]}x{shape[0]} is under {name}'s minimum "
                          f"{spec.min_size}x{spec.min_size}; accepted: height and width >= {spec.min_size}")


def build_core(name: str, input_shape: tuple[int, int, int], pooling: str) -> keras.Model:
    """The registry's core for ``name``, randomly initialised (the part a weights file describes)."""
    check_input_shape(name, input_shape)
    return MODELS.get(name).build_core(tuple(input_shape), pooling)


def load_core_weights(core: keras.Model, weights_file: Path, model_name: str) -> None:
    """Load a weights file into ``core``, turning Keras' mismatch errors into one that says what fits."""
    try:
        with warnings.catch_warnings():
            # A mismatched file makes Keras warn once per layer before it raises; the error says it all.
            warnings.simplefilter("ignore")
            core.load_weights(str(weights_file))
    except Exception as err:  # Keras raises ValueError, h5py OSError/KeyError: all mean "does not fit"
        reason = (str(err).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"weights file {str(weights_file)!r} does not fit model {model_name!r} "
            f"({len(core.weights)} weight arrays, first {core.weights[0].path} {tuple(core.weights[0].shape)}): "
            f"{type(err).__name__}: {reason} Accepted: a file saved from this model's base with "
            f"save_weights(), Keras' ImageNet no-top file for {model_name}, or weights=none"
        ) from err


def create_base(name: str, input_shape: tuple[int, int, int], pooling: str = "max",
                weights_file: Path | None = None) -> keras.Model:
    """Preprocessing + core: pixels in [0, 255] -> feature vector. ``weights_file`` None = random init."""
    core = build_core(name, input_shape, pooling)
    if weights_file is not None:
        load_core_weights(core, Path(weights_file), name)
    inputs = keras.Input(tuple(input_shape), name="image")
    features = core(MODELS.get(name).preprocess()(inputs))
    return keras.Model(inputs, features, name=f"{name}_base")
