"""Each model's Keras side: preprocessing + convolutional core -> feature map, registered by the name
``models.catalog`` declares it under (with its minimum size, ImageNet weights and auxiliary classifiers).

The base pools the core's map (``pooling``: max, avg or flatten) into the vector a head reads. A
model may also name auxiliary classifiers (GoogLeNet): the core exposes the feature maps they
read, and ``models.assembly.assemble_model`` gives them outputs ``aux1``, ``aux2``.

Every base takes raw uint8-range RGB pixels and does its own preprocessing, so training, evaluation
and serving cannot disagree about it. Only ``keras`` and ``keras.ops`` are used, so the same code
runs on TensorFlow (the default backend) and on JAX. Keras is imported by the functions that build
something, never at import.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferbench.config.choices import POOLINGS
from transferbench.core.errors import ConfigError
from transferbench.core.registry import Registry
from transferbench.models.catalog import MODELS, check_input_shape

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Core:
    """How to build a catalog model: its core and its preprocessing (and its auxiliary classifiers' trunk)."""

    # input_shape -> the core whose weights a weights file holds. A core returns spatial feature
    # maps, never pooled: the base pools (see create_base), so a core's weights and layer list do
    # not depend on the experiment's pooling. Extra outputs are the inputs of auxiliary classifiers.
    build_core: Callable[[tuple[int, int, int]], keras.Model]
    preprocess: Callable[[], keras.layers.Layer]
    # Auxiliary classifiers (ModelEntry.aux_loss_weights): the trunk turns the core's i-th extra output
    # into features for the classifier named aux<i>.
    aux_trunk: Callable[[keras.KerasTensor, str], keras.KerasTensor] | None = None


CORES: Registry[Core] = Registry("Keras builder", of=MODELS)


def pooling_layer(pooling: str) -> keras.layers.Layer:
    """The layer that turns a core's feature map into the feature vector a head reads."""
    from keras import layers

    if pooling not in POOLINGS:
        raise ConfigError(f"pooling {pooling!r} is unknown; accepted: {', '.join(POOLINGS)}")
    layer = {"max": layers.GlobalMaxPooling2D, "avg": layers.GlobalAveragePooling2D,
             "flatten": layers.Flatten}[pooling]  # flatten: reference study 003's VGG16 block5_pool, flattened
    return layer(name=f"pool_{pooling}")


def _rescaling(scale: float, offset: float = 0.0) -> Callable[[], keras.layers.Layer]:
    def make() -> keras.layers.Layer:
        from keras import layers

        return layers.Rescaling(scale, offset=offset, name="preprocess")

    return make


def _caffe() -> keras.layers.Layer:
    from transferbench.models.custom_objects import CaffePreprocess

    return CaffePreprocess(name="preprocess")


def _application(name: str) -> Callable[[tuple[int, int, int]], keras.Model]:
    """A keras.applications core without its top, randomly initialised."""

    def build(shape: tuple[int, int, int]) -> keras.Model:
        import keras

        return getattr(keras.applications, name)(include_top=False, weights=None, input_shape=shape)

    return build


def _architecture(name: str) -> Callable[..., Any]:
    """A function of transferbench.models.architectures, imported when first called."""

    def call(*args: Any) -> Any:
        from transferbench.models import architectures

        return getattr(architectures, name)(*args)

    return call


CORES.register("xception")(Core(
    build_core=_application("Xception"),
    # Xception was trained on [-1, 1] inputs (reference study 000 fed it [0, 1]).
    preprocess=_rescaling(1 / 127.5, offset=-1.0),
))

CORES.register("vgg16")(Core(build_core=_application("VGG16"), preprocess=_caffe))

CORES.register("cnn")(Core(build_core=_architecture("small_cnn"), preprocess=_rescaling(1 / 255.0)))

CORES.register("googlenet")(Core(
    build_core=_architecture("googlenet"),
    preprocess=_rescaling(1 / 255.0),  # as reference study 004: pixels / 255
    aux_trunk=_architecture("googlenet_aux_trunk"),
))


def build_core(name: str, input_shape: tuple[int, int, int]) -> keras.Model:
    """The registry's core for ``name``, randomly initialised (the part a weights file describes; the base
    pools its output, so pooling is no part of it)."""
    check_input_shape(name, input_shape)
    height, width, channels = input_shape  # a list from JSON works too
    return CORES.get(name).build_core((height, width, channels))


@functools.cache
def core_layer_count(name: str) -> int:
    """``len(core.layers)`` (Keras' order, input layer first), what ``freeze: N`` counts; size-independent."""
    size = MODELS.get(name).min_size
    return len(build_core(name, (size, size, 3)).layers)


def core_of(model: keras.Model) -> keras.Model:
    """The core inside a model built by create_base or build_model (its only nested model)."""
    import keras

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


def load_model(path: Path | str, compile: bool = True) -> keras.Model:
    """A saved model. Our own Keras classes are registered first: nothing else imports them at load time."""
    import keras

    import transferbench.models.custom_objects  # noqa: F401

    return keras.saving.load_model(path, compile=compile)


def base_outputs(name: str, core: keras.Model, pixels: keras.KerasTensor,
                 pooling: str | None) -> tuple[keras.KerasTensor, list[keras.KerasTensor]]:
    """Preprocessing + ``core`` + pooling applied to ``pixels``: (features, auxiliary feature maps).

    ``pooling`` None leaves the core's spatial map. Auxiliary maps (GoogLeNet) are never pooled.
    """
    outputs = core(CORES.get(name).preprocess()(pixels))
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
    import keras

    core = initial_core(name, input_shape, weights_file)
    inputs = keras.Input(tuple(input_shape), name="image")
    features, aux = base_outputs(name, core, inputs, pooling)
    return keras.Model(inputs, [features, *aux] if aux else features, name=f"{name}_base")
