"""The head registry: what sits on a base's features and turns them into predictions + a loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
from keras import layers

from stages.config import ConfigError
from stages.datasets import Task
from stages.registry import Registry


@dataclass(frozen=True)
class HeadSpec:
    build: Callable[[keras.KerasTensor, Task], list[keras.KerasTensor]]
    loss: Callable[[Task], str]
    tasks: frozenset[str]  # task kinds this head can serve


HEADS: Registry[HeadSpec] = Registry("head")


def output_names(task: Task) -> list[str]:
    """One name per output; multi-head tasks number them (head0..head5 for CAPTCHAs)."""
    if task.kind == "multihead":
        return [f"head{i}" for i in range(task.n_outputs)]
    return ["label"]


def _dense(features: keras.KerasTensor, task: Task) -> list[keras.KerasTensor]:
    # float32 outputs keep the softmax/sigmoid stable under mixed precision.
    if task.kind == "binary":
        return [layers.Dense(1, activation="sigmoid", dtype="float32", name="label")(features)]
    return [layers.Dense(task.n_classes, activation="softmax", dtype="float32", name=name)(features)
            for name in output_names(task)]


HEADS.register("dense")(HeadSpec(
    build=_dense,
    loss=lambda task: "binary_crossentropy" if task.kind == "binary" else "sparse_categorical_crossentropy",
    tasks=frozenset({"binary", "multiclass", "multihead"}),
))


def check_head(name: str, task: Task) -> None:
    spec = HEADS.get(name)
    if task.kind not in spec.tasks:
        raise ConfigError(f"head {name!r} does not fit a {task.kind} task; "
                          f"heads for {task.kind}: {', '.join(n for n in HEADS.names() if task.kind in HEADS.get(n).tasks)}")
