"""The head registry: what sits on a base's features and turns them into predictions + a loss.

A head is the optional hidden layer and dropout every head shares (``head_units``, ``head_dropout``)
plus its own classifier, one per output of the task. Every head also says how to read its outputs
(``HeadSpec.predicted_classes``), so evaluation scores probabilities and SVM margins alike, and
:func:`task_outputs` picks the task's outputs out of ``model.predict``, dropping auxiliary ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from transferbench.core.errors import ConfigError
from transferbench.core.registry import Registry
from transferbench.data.task import Task

if TYPE_CHECKING:  # Keras loads when a head is built: checking params needs the rules below only
    import keras

    from transferbench.config.experiment import ExperimentBase  # pydantic: building a model needs none


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
class HeadSpec:
    # (features, task, options, name) -> one output layer named ``name``
    classifier: Callable[[keras.KerasTensor, Task, HeadOptions, str], keras.KerasTensor]
    loss: Callable[[Task], Any]  # a Keras loss (name or object) for one output
    tasks: frozenset[str]  # task kinds this head can serve
    # Binary decision rule: class 1 where the output exceeds this (probabilities 0.5, margins 0).
    threshold: float = 0.5
    # (name, pooling, options) -> None, or ConfigError for settings the head cannot take
    check: Callable[[str, str | None, HeadOptions], None] = field(default=lambda name, pooling, options: None)

    def build(self, features: keras.KerasTensor, task: Task,
              options: HeadOptions = HeadOptions()) -> list[keras.KerasTensor]:
        """Outputs named ``output_names(task)`` on ``features`` (a pooled base's vector)."""
        from keras import layers

        x = features
        if options.units:
            x = layers.Dense(options.units, activation="relu", name="head_hidden")(x)
        if options.dropout:
            x = layers.Dropout(options.dropout, name="head_dropout")(x)
        return [self.classifier(x, task, options, name) for name in output_names(task)]

    def metric(self, task: Task) -> Any:
        """Accuracy that follows the decision rule (Keras' "accuracy" thresholds binary outputs at 0.5)."""
        import keras

        if task.kind == "binary" and self.threshold != 0.5:
            return keras.metrics.BinaryAccuracy(name="accuracy", threshold=self.threshold)
        return "accuracy"

    def balanced_metric(self, task: Task) -> Any:
        """Mean recall over classes by the same decision rule (transferbench.models.custom_objects)."""
        from transferbench.models.custom_objects import BalancedAccuracy

        return BalancedAccuracy(task.n_classes, threshold=self.threshold if task.kind == "binary" else None)

    def predicted_classes(self, task: Task, predictions: Sequence[np.ndarray]) -> np.ndarray:
        """Class indices (n, n_outputs) from the task's outputs (see task_outputs)."""
        if task.kind == "binary":
            return np.stack([(np.asarray(p).reshape(-1) > self.threshold).astype(int) for p in predictions], axis=1)
        return np.stack([np.asarray(p).argmax(axis=-1) for p in predictions], axis=1)


HEADS: Registry[HeadSpec] = Registry("head")


def output_names(task: Task) -> list[str]:
    """One name per output; multi-head tasks number them (head0..head5 for CAPTCHAs)."""
    if task.kind == "multihead":
        return [f"head{i}" for i in range(task.n_outputs)]
    return ["label"]


def aux_output_names(task: Task, index: int) -> list[str]:
    """Outputs of auxiliary classifier ``index`` (1-based): ``aux1``, or ``aux1_head0``.. for multi-head tasks."""
    if task.kind == "multihead":
        return [f"aux{index}_{name}" for name in output_names(task)]
    return [f"aux{index}"]


def output_sources(task: Task, names: Sequence[str]) -> dict[str, str]:
    """Each of the model's outputs ``names`` -> the task output whose labels it learns (aux1 -> label,
    aux2_head3 -> head3); ValueError for a name that is neither."""
    main = output_names(task)
    source = {name: name for name in main}
    index = 1
    while all(name in names for name in aux_output_names(task, index)):
        source.update(zip(aux_output_names(task, index), main, strict=True))
        index += 1
    unknown = sorted(set(names) - set(source))
    if unknown:
        raise ValueError(f"outputs {unknown} are neither the task's {main} nor auxiliary copies of them")
    return {name: source[name] for name in names}


def task_outputs(model: keras.Model, predictions: Any, task: Task) -> list[np.ndarray]:
    """The task's predictions from ``model.predict(...)``, in ``output_names(task)`` order.

    Auxiliary outputs (GoogLeNet's aux1, aux2) are training aids and are dropped; a single-output
    model's array comes back as a one-element list.
    """
    if isinstance(predictions, Mapping):
        return [np.asarray(predictions[name]) for name in output_names(task)]
    listed = list(predictions) if isinstance(predictions, (list, tuple)) else [predictions]
    names = list(model.output_names)
    if len(names) != len(listed):
        raise ValueError(f"model {model.name!r} has outputs {names} but {len(listed)} predictions were given")
    if len(names) == 1:
        return [np.asarray(listed[0])]
    return [np.asarray(listed[names.index(name)]) for name in output_names(task)]


# ---- the heads ------------------------------------------------------------------------------

def _softmax_or_sigmoid(features: keras.KerasTensor, task: Task, options: HeadOptions, name: str):
    # float32 outputs keep the softmax/sigmoid stable under mixed precision.
    import keras
    from keras import layers

    regulariser = keras.regularizers.L2(options.l2) if options.l2 else None
    if task.kind == "binary":
        return layers.Dense(1, activation="sigmoid", kernel_regularizer=regulariser, dtype="float32",
                            name=name)(features)
    return layers.Dense(task.n_classes, activation="softmax", kernel_regularizer=regulariser, dtype="float32",
                        name=name)(features)


def _cross_entropy(task: Task) -> str:
    return "binary_crossentropy" if task.kind == "binary" else "sparse_categorical_crossentropy"


ALL_TASKS = frozenset({"binary", "multiclass", "multihead"})

HEADS.register("dense")(HeadSpec(
    classifier=_softmax_or_sigmoid,
    loss=_cross_entropy,
    tasks=ALL_TASKS,
))


def _check_gap(name: str, pooling: str | None, options: HeadOptions) -> None:
    if pooling is not None and pooling != "avg":
        raise ConfigError(f"head {name!r} is global average pooling + softmax; pooling {pooling!r} does not "
                          "fit it; accepted: pooling avg (or head dense for max / flatten)")
    if options.units:
        raise ConfigError(f"head {name!r} feeds the pooled features straight into the classifier; "
                          f"head_units {options.units} does not fit it; accepted: head_units 0 "
                          "(or head dense for a hidden layer)")


# Seed 001's "global average pooling + softmax": the averaged feature maps go straight into the
# classifier. The base does the averaging (pooling: avg), so the head refuses any other pooling.
HEADS.register("gap")(HeadSpec(
    classifier=_softmax_or_sigmoid,
    loss=_cross_entropy,
    tasks=ALL_TASKS,
    check=_check_gap,
))


def _linear_svm(features: keras.KerasTensor, task: Task, options: HeadOptions, name: str):
    import keras
    from keras import layers

    width = 1 if task.kind == "binary" else task.n_classes
    return layers.Dense(width, activation=None, kernel_regularizer=keras.regularizers.L2(options.l2),
                        dtype="float32", name=name)(features)


def _check_svm(name: str, pooling: str | None, options: HeadOptions) -> None:
    if options.l2 <= 0:
        raise ConfigError(f"head {name!r} is a linear SVM, whose margin needs an L2 penalty; head_l2 "
                          f"{options.l2!r} does not fit it; accepted: head_l2 > 0 (e.g. 0.0001)")


def _squared_hinge() -> keras.losses.Loss:
    from transferbench.models.custom_objects import OneVsRestSquaredHinge

    return OneVsRestSquaredHinge()


# Seed 001's linear SVM: one linear margin per class (one-vs-rest), squared hinge loss and an L2
# penalty on the weights. Outputs are margins: class 1 of a binary task where the margin is > 0.
HEADS.register("svm")(HeadSpec(
    classifier=_linear_svm,
    loss=lambda task: _squared_hinge(),
    tasks=ALL_TASKS,
    threshold=0.0,
    check=_check_svm,
))


def check_head(name: str, task: Task, pooling: str | None = None, options: HeadOptions | None = None) -> None:
    """ConfigError unless head ``name`` fits the task (and, when given, the pooling and head settings)."""
    spec = HEADS.get(name)
    if task.kind not in spec.tasks:
        fitting = [n for n in HEADS.names() if task.kind in HEADS.get(n).tasks]
        raise ConfigError(f"head {name!r} does not fit a {task.kind} task; heads for {task.kind}: {', '.join(fitting)}")
    spec.check(name, pooling, options or HeadOptions())
