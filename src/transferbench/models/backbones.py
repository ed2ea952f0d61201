"""The model registry: each entry builds a base (preprocessing + convolutional core -> feature map).

The base pools the core's map (``pooling``: max, avg or flatten) into the vector a head reads. A
model may also name auxiliary classifiers (GoogLeNet): the core exposes the feature maps they
read, and ``training.assemble_model`` gives them outputs ``aux1``, ``aux2``.

Every base takes raw uint8-range RGB pixels and does its own preprocessing, so training, evaluation
and serving cannot disagree about it. Only ``keras`` and ``keras.ops`` are used, so the same code
runs on TensorFlow (the default backend) and on JAX.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
from keras import layers

from transferbench.core.errors import ConfigError
from transferbench.core.registry import Registry

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
    # input_shape -> the core whose weights a weights file holds. A core returns spatial feature
    # maps, never pooled: the base pools (see create_base), so a core's weights and layer list do
    # not depend on the experiment's pooling. Extra outputs are the inputs of auxiliary classifiers.
    build_core: Callable[[tuple[int, int, int]], keras.Model]
    preprocess: Callable[[], keras.layers.Layer]
    min_size: int  # smallest height/width the core accepts
    imagenet: ImagenetWeights | None = None
    # Auxiliary classifiers (GoogLeNet): aux_trunk turns the core's i-th extra output into features
    # for an extra classifier named aux<i>, trained with loss weight aux_loss_weights[i - 1] and
    # ignored at evaluation (see transferbench.models.heads.task_outputs).
    aux_loss_weights: tuple[float, ...] = ()
    aux_trunk: Callable[[keras.KerasTensor, str], keras.KerasTensor] | None = None


MODELS: Registry[ModelSpec] = Registry("model")


@keras.saving.register_keras_serializable(package="transferbench")
class CaffePreprocess(layers.Layer):
    """VGG's 'caffe' preprocessing: RGB -> BGR, minus the ImageNet channel means, no scaling."""

    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, x):
        x = keras.ops.flip(keras.ops.cast(x, self.compute_dtype), axis=-1)
        return x - keras.ops.convert_to_tensor(self.MEAN_BGR, dtype=self.compute_dtype)


POOLINGS = {
    "max": layers.GlobalMaxPooling2D,
    "avg": layers.GlobalAveragePooling2D,
    "flatten": layers.Flatten,  # seed 003: VGG16's block5_pool, flattened
}


def pooling_layer(pooling: str) -> keras.layers.Layer:
    """The layer that turns a core's feature map into the feature vector a head reads."""
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling {pooling!r} is unknown; accepted: {', '.join(POOLINGS)}")
    return POOLINGS[pooling](name=f"pool_{pooling}")


MODELS.register("xception")(ModelSpec(
    build_core=lambda shape: keras.applications.Xception(include_top=False, weights=None, input_shape=shape),
    # Xception was trained on [-1, 1] inputs (the seed fed it [0, 1]).
    preprocess=lambda: layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess"),
    min_size=71,
    imagenet=ImagenetWeights(
        "xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "b0042744bf5b25fce3cb969f33bebb97"),
))

MODELS.register("vgg16")(ModelSpec(
    build_core=lambda shape: keras.applications.VGG16(include_top=False, weights=None, input_shape=shape),
    preprocess=lambda: CaffePreprocess(name="preprocess"),
    min_size=32,
    imagenet=ImagenetWeights(
        "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "6d6bbae143d832006294945121d1f1fc"),
))


def _small_cnn(shape: tuple[int, int, int]) -> keras.Model:
    """Seed 002's convolutional part: three 3x3 conv (16/32/64) + 2x2 max-pool blocks.

    The seed's Flatten + Dense(512, relu) are the experiment's ``pooling: flatten`` and
    ``head_units: 512``, so the base is the convolutional part alone, as for the other models.
    """
    inputs = keras.Input(shape)
    x = inputs
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    return keras.Model(inputs, x, name="cnn")


MODELS.register("cnn")(ModelSpec(
    build_core=_small_cnn,
    preprocess=lambda: layers.Rescaling(1 / 255.0, name="preprocess"),
    min_size=22,  # three (conv 3x3 valid, pool 2) blocks leave at least 1x1
))


# ---- GoogLeNet / Inception v1 (seed 004) -----------------------------------------------------

def _conv(filters: int, size: int, name: str, strides: int = 1, bias: float | None = None) -> layers.Layer:
    # The seed starts the stem's first convolution and every inception branch with bias 0.2
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


def _googlenet(shape: tuple[int, int, int]) -> keras.Model:
    """Seed 004's Inception v1 up to inception_5b; extra outputs: the maps after 4a and 4d (aux inputs).

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


def _googlenet_aux_trunk(feature_map: keras.KerasTensor, name: str) -> keras.KerasTensor:
    """Seed 004's auxiliary classifier up to its softmax: avg-pool 5x5/3, 1x1 conv 128, dense 1024, dropout 0.7.

    At 224x224 the map is 14x14 and the pool leaves 4x4, as in the paper; a smaller map (small
    test images) pools over at most its own size, so any input from min_size up works.
    """
    height, width = feature_map.shape[1], feature_map.shape[2]
    x = layers.AveragePooling2D((min(5, height), min(5, width)), strides=3, name=f"{name}_pool")(feature_map)
    x = _conv(128, 1, f"{name}_conv")(x)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, activation="relu", name=f"{name}_fc")(x)
    return layers.Dropout(0.7, name=f"{name}_dropout")(x)


MODELS.register("googlenet")(ModelSpec(
    build_core=_googlenet,
    preprocess=lambda: layers.Rescaling(1 / 255.0, name="preprocess"),  # as the seed: pixels / 255
    # Five stride-2 stages ('same' padding): 32 px leaves inception_5b at 1x1. Smaller inputs would
    # run, but the later stages would no longer reduce anything.
    min_size=32,
    aux_loss_weights=(0.3, 0.3),
    aux_trunk=_googlenet_aux_trunk,
))


def check_input_shape(name: str, shape: tuple[int, int, int]) -> None:
    spec = MODELS.get(name)
    if min(shape[0], shape[1]) < spec.min_size:
        raise ConfigError(f"image size {shape[1]}x{shape[0]} is under {name}'s minimum "
                          f"{spec.min_size}x{spec.min_size}; accepted: height and width >= {spec.min_size}")


def build_core(name: str, input_shape: tuple[int, int, int], pooling: str | None = None) -> keras.Model:
    """The registry's core for ``name``, randomly initialised (the part a weights file describes).

    ``pooling`` does not change the core (the base pools its output); it is accepted so callers
    that pass the experiment's pooling keep working.
    """
    check_input_shape(name, input_shape)
    return MODELS.get(name).build_core(tuple(input_shape))


@functools.lru_cache(maxsize=None)
def core_layer_count(name: str) -> int:
    """``len(core.layers)`` (Keras' order, input layer first), what ``freeze: N`` counts; size-independent."""
    size = MODELS.get(name).min_size
    return len(build_core(name, (size, size, 3)).layers)


def core_of(model: keras.Model) -> keras.Model:
    """The core inside a model built by create_base or build_model (its only nested model)."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(f"model {model.name!r} has {len(nested)} nested models; expected exactly one core")
    return nested[0]


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


def base_outputs(name: str, core: keras.Model, pixels: keras.KerasTensor,
                 pooling: str | None) -> tuple[keras.KerasTensor, list[keras.KerasTensor]]:
    """Preprocessing + ``core`` + pooling applied to ``pixels``: (features, auxiliary feature maps).

    ``pooling`` None leaves the core's spatial map. Auxiliary maps (GoogLeNet) are never pooled.
    """
    outputs = core(MODELS.get(name).preprocess()(pixels))
    features, *aux = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    if pooling is not None:
        features = pooling_layer(pooling)(features)
    return features, aux


def initial_core(name: str, input_shape: tuple[int, int, int], weights_file: Path | None) -> keras.Model:
    """The registry's core for ``name`` with ``weights_file`` loaded (None: random initialisation)."""
    core = build_core(name, input_shape)
    if weights_file is not None:
        load_core_weights(core, Path(weights_file), name)
    return core


def create_base(name: str, input_shape: tuple[int, int, int], pooling: str | None = "max",
                weights_file: Path | None = None) -> keras.Model:
    """Preprocessing + core + pooling: pixels in [0, 255] -> features (+ auxiliary maps). None = random init."""
    core = initial_core(name, input_shape, weights_file)
    inputs = keras.Input(tuple(input_shape), name="image")
    features, aux = base_outputs(name, core, inputs, pooling)
    return keras.Model(inputs, [features, *aux] if aux else features, name=f"{name}_base")
