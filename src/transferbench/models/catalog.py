"""The model and head registries: what checking params knows about each, with no Keras and no builder.

An entry says what a model or head accepts (minimum input size, ImageNet weights, auxiliary
classifiers, task kinds and settings); ``models.backbones`` and ``models.heads`` attach the Keras
code to these names. So checking params, and every stage that only checks them (downloads,
preparation, validation, CAPTCHA generation), imports this module and none of the model code: an
edit to a builder reruns the stages that build models and no others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from transferbench.core.errors import ConfigError
from transferbench.core.registry import Registry

if TYPE_CHECKING:
    from transferbench.config.experiment import ExperimentBase
    from transferbench.data.task import Task

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
class ModelEntry:
    """A registered model; its core and preprocessing are registered under the same name in models.backbones."""

    min_size: int  # smallest height/width the core accepts
    imagenet: ImagenetWeights | None = None
    # Auxiliary classifiers (GoogLeNet): the i-th feeds an extra output named aux<i>, trained with loss
    # weight aux_loss_weights[i - 1] and ignored at evaluation (see transferbench.models.heads.task_outputs).
    aux_loss_weights: tuple[float, ...] = ()
    # Training steps per call of Keras' train function, at most. Keras' work around each step (its epoch loop,
    # the callbacks' hooks, the progress bar; on TensorFlow a call of the compiled function, a round trip from
    # the host) costs the same whatever the model: a large share next to a small model's step, a small one
    # next to Xception's. Results stay the same (steps_per_call).
    steps_per_execution: int = 1

    def steps_per_call(self, steps: int) -> int:
        """The largest count up to ``steps_per_execution`` that divides ``steps``, an epoch's training steps:
        Keras takes a whole call's batches from the feed, so a call crossing the epoch's end would take the
        next epoch's first batches. So a run trains the same batches in the same order, each one step as
        before; every callback the project uses acts on epochs, which Keras still calls once each (its
        batch-level hooks it calls once per call, with the last step's logs)."""
        most = max(1, min(self.steps_per_execution, steps))
        return max(d for d in range(1, most + 1) if steps % d == 0)


MODELS: Registry[ModelEntry] = Registry("model")

MODELS.register("xception")(ModelEntry(
    min_size=71,
    imagenet=ImagenetWeights(
        "xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "b0042744bf5b25fce3cb969f33bebb97"),
))

MODELS.register("vgg16")(ModelEntry(
    min_size=32,
    imagenet=ImagenetWeights(
        "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "6d6bbae143d832006294945121d1f1fc"),
))

MODELS.register("cnn")(ModelEntry(
    min_size=22,  # three (conv 3x3 valid, pool 2) blocks leave at least 1x1
    # Its step at batch 20 is little work: on one H200 it reached 0.59 of its ceiling fed from the
    # device (docs/benchmarks.md), the rest Keras' per-step work.
    steps_per_execution=16,
))

MODELS.register("googlenet")(ModelEntry(
    # Five stride-2 stages ('same' padding): 32 px leaves inception_5b at 1x1. Smaller inputs would
    # run, but the later stages would no longer reduce anything.
    min_size=32,
    aux_loss_weights=(0.3, 0.3),
))


def check_input_shape(name: str, shape: tuple[int, int, int]) -> None:
    """ConfigError unless model ``name`` accepts images of ``shape`` (height, width, channels)."""
    entry = MODELS.get(name)
    if min(shape[0], shape[1]) < entry.min_size:
        raise ConfigError(f"image size {shape[1]}x{shape[0]} is under {name}'s minimum "
                          f"{entry.min_size}x{entry.min_size}; accepted: height and width >= {entry.min_size}")


# ---- heads ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeadOptions:
    """The experiment's head settings: hidden Dense(relu) units (0 = none), dropout, classifier L2."""

    units: int = 0
    dropout: float = 0.0
    l2: float = 0.0

    @classmethod
    def of(cls, settings: ExperimentBase) -> HeadOptions:
        return cls(units=settings.head_units, dropout=settings.head_dropout, l2=settings.head_l2)


@dataclass(frozen=True)
class HeadEntry:
    """A registered head; its classifier and loss are registered under the same name in models.heads."""

    tasks: frozenset[str]  # task kinds this head can serve
    # Binary decision rule: class 1 where the output exceeds this (probabilities 0.5, margins 0).
    threshold: float = 0.5
    # (name, pooling, options) -> None, or ConfigError for settings the head cannot take
    check: Callable[[str, str | None, HeadOptions], None] = field(default=lambda name, pooling, options: None)


HEADS: Registry[HeadEntry] = Registry("head")
ALL_TASKS = frozenset({"binary", "multiclass", "multihead"})

HEADS.register("dense")(HeadEntry(tasks=ALL_TASKS))


def _check_gap(name: str, pooling: str | None, options: HeadOptions) -> None:
    if pooling is not None and pooling != "avg":
        raise ConfigError(f"head {name!r} is global average pooling + softmax; pooling {pooling!r} does not "
                          "fit it; accepted: pooling avg (or head dense for max / flatten)")
    if options.units:
        raise ConfigError(f"head {name!r} feeds the pooled features straight into the classifier; "
                          f"head_units {options.units} does not fit it; accepted: head_units 0 "
                          "(or head dense for a hidden layer)")


# Reference study 001's "global average pooling + softmax": the averaged feature maps go straight into the
# classifier. The base does the averaging (pooling: avg), so the head refuses any other pooling.
HEADS.register("gap")(HeadEntry(tasks=ALL_TASKS, check=_check_gap))


def _check_svm(name: str, pooling: str | None, options: HeadOptions) -> None:
    if options.l2 <= 0:
        raise ConfigError(f"head {name!r} is a linear SVM, whose margin needs an L2 penalty; head_l2 "
                          f"{options.l2!r} does not fit it; accepted: head_l2 > 0 (e.g. 0.0001)")


# Reference study 001's linear SVM: outputs are margins, so class 1 of a binary task where the margin is > 0.
HEADS.register("svm")(HeadEntry(tasks=ALL_TASKS, threshold=0.0, check=_check_svm))


def check_head(name: str, task: Task, pooling: str | None = None, options: HeadOptions | None = None) -> None:
    """ConfigError unless head ``name`` fits the task (and, when given, the pooling and head settings)."""
    entry = HEADS.get(name)
    if task.kind not in entry.tasks:
        fitting = [n for n in HEADS.names() if task.kind in HEADS.get(n).tasks]
        raise ConfigError(f"head {name!r} does not fit a {task.kind} task; heads for {task.kind}: {', '.join(fitting)}")
    entry.check(name, pooling, options or HeadOptions())
