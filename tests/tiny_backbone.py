"""Tiny registered backbones that stand in for Xception and GoogLeNet where a test checks a mechanism.

They go through the real model registries (models.catalog's entry, models.backbones' builder), so
strategy, training, resume and tracking tests run the code paths users run, in a fraction of a second
instead of the many seconds a real core costs to build and trace. ``tiny`` stands in for Xception: it
has BatchNormalization (what the frozen-part and two-phase rules act on) and Xception's preprocessing.
``tiny_aux`` stands in for GoogLeNet: two auxiliary classifiers, GoogLeNet's preprocessing.

Both are registered as private: tests build and train them by name, but the model names users see
(the valid choices an error lists) stay the production ones. Keras is imported inside the builders
only, so registering these costs nothing where a test never builds a model.
"""

from __future__ import annotations

from transferbench.models.backbones import CORES, Core
from transferbench.models.catalog import MODELS, ModelEntry

# Keras' order of the core's layers; `freeze: 4` freezes the first block.
TINY_LAYERS = ("input", "conv1", "bn1", "relu1", "conv2", "bn2", "relu2")
TINY_MIN_SIZE = 8
TINY_AUX_LOSS_WEIGHTS = (0.3, 0.1)  # unequal, so a test can tell which auxiliary output got which
# Registered models a test may build in the default run; any other (Xception, VGG16, GoogLeNet and
# whatever is registered next) is a real architecture whose build belongs to `pytest -m slow`.
FAST_MODELS = ("cnn", "tiny", "tiny_aux")


def _block(x, filters: int, index: int, strides: int = 1):
    from keras import layers

    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"conv{index}")(x)
    x = layers.BatchNormalization(name=f"bn{index}")(x)
    return layers.ReLU(name=f"relu{index}")(x)


def _tiny(shape: tuple[int, int, int]):
    """Conv-BatchNorm-ReLU twice: 4 filters, then 8 at stride 2 (444 weights, 24 of them BN statistics)."""
    import keras

    inputs = keras.Input(shape, name="input")
    return keras.Model(inputs, _block(_block(inputs, 4, 1), 8, 2, strides=2), name="tiny")


def _tiny_with_aux(shape: tuple[int, int, int]):
    """``tiny``, also returning the first block's map twice: the inputs of two auxiliary classifiers."""
    import keras

    inputs = keras.Input(shape, name="input")
    first = _block(inputs, 4, 1)
    return keras.Model(inputs, [_block(first, 8, 2, strides=2), first, first], name="tiny_aux")


def _aux_trunk(feature_map, name: str):
    """GoogLeNet's auxiliary trunk in small: pool, then a hidden Dense layer."""
    from keras import layers

    x = layers.GlobalAveragePooling2D(name=f"{name}_pool")(feature_map)
    return layers.Dense(4, activation="relu", name=f"{name}_fc")(x)


TINY = MODELS.register("tiny", private=True)(ModelEntry(min_size=TINY_MIN_SIZE))
CORES.register("tiny")(Core(build_core=_tiny, preprocess=CORES.get("xception").preprocess))

TINY_AUX = MODELS.register("tiny_aux", private=True)(ModelEntry(
    min_size=TINY_MIN_SIZE, aux_loss_weights=TINY_AUX_LOSS_WEIGHTS,
))
CORES.register("tiny_aux")(Core(build_core=_tiny_with_aux, preprocess=CORES.get("googlenet").preprocess,
                                aux_trunk=_aux_trunk))


def each_model() -> list:
    """Every registered model as a pytest parameter: the real architectures marked slow, the tiny ones jax
    (.ci/run runs those on JAX too; the real ones take minutes to compile there)."""
    import pytest

    return [pytest.param(name, marks=pytest.mark.jax if name in FAST_MODELS else pytest.mark.slow)
            for name in MODELS.names(private=True)]
