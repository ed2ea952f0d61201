"""Each head's Keras side: the classifier and loss registered by the name ``models.catalog`` declares
it under (with the task kinds it serves, its decision rule and the settings it refuses).

A head is the optional hidden layer and dropout every head shares (``head_units``, ``head_dropout``)
plus its own classifier, one per output of the task. Every head also says how to read its outputs
(``HeadSpec.predicted_classes``), so evaluation scores probabilities and SVM margins alike, and
:func:`task_outputs` picks the task's outputs out of ``model.predict``, dropping auxiliary ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from transferbench.core.registry import Registry
from transferbench.data.task import Task
from transferbench.models.catalog import HEADS, HeadEntry, HeadOptions

if TYPE_CHECKING:  # Keras loads when a head is built
    import keras


@dataclass(frozen=True)
class Classifier:
    """How to build a catalog head's outputs: the layer and its loss."""

    # (features, task, options, name) -> one output layer named ``name``
    layer: Callable[[keras.KerasTensor, Task, HeadOptions, str], keras.KerasTensor]
    loss: Callable[[Task], Any]  # a Keras loss (name or object) for one output


CLASSIFIERS: Registry[Classifier] = Registry("Keras classifier", of=HEADS)


@dataclass(frozen=True)
class HeadSpec:
    """A head as a model uses it: its catalog entry (task kinds, decision rule) and its classifier."""

    entry: HeadEntry
    classifier: Classifier

    @property
    def threshold(self) -> float:
        return self.entry.threshold

    def loss(self, task: Task) -> Any:
        return self.classifier.loss(task)

    def build(self, features: keras.KerasTensor, task: Task,
              options: HeadOptions = HeadOptions()) -> list[keras.KerasTensor]:
        """Outputs named ``output_names(task)`` on ``features`` (a pooled base's vector)."""
        from keras import layers

        x = features
        if options.units:
            x = layers.Dense(options.units, activation="relu", name="head_hidden")(x)
        if options.dropout:
            x = layers.Dropout(options.dropout, name="head_dropout")(x)
        return [self.classifier.layer(x, task, options, name) for name in output_names(task)]

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


def head_spec(name: str) -> HeadSpec:
    """Head ``name``'s catalog entry and classifier; ConfigError naming the heads for an unknown one."""
    return HeadSpec(HEADS.get(name), CLASSIFIERS.get(name))


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


CLASSIFIERS.register("dense")(Classifier(layer=_softmax_or_sigmoid, loss=_cross_entropy))

# Reference study 001's "global average pooling + softmax": the base does the averaging (the catalog's rule
# refuses any pooling but avg), so the classifier is the dense head's.
CLASSIFIERS.register("gap")(Classifier(layer=_softmax_or_sigmoid, loss=_cross_entropy))


def _linear_svm(features: keras.KerasTensor, task: Task, options: HeadOptions, name: str):
    import keras
    from keras import layers

    width = 1 if task.kind == "binary" else task.n_classes
    return layers.Dense(width, activation=None, kernel_regularizer=keras.regularizers.L2(options.l2),
                        dtype="float32", name=name)(features)


def _squared_hinge() -> keras.losses.Loss:
    from transferbench.models.custom_objects import OneVsRestSquaredHinge

    return OneVsRestSquaredHinge()


# Reference study 001's linear SVM: one linear margin per class (one-vs-rest), squared hinge loss and an L2
# penalty on the weights (the catalog's rule requires head_l2 > 0).
CLASSIFIERS.register("svm")(Classifier(layer=_linear_svm, loss=lambda task: _squared_hinge()))
