"""An experiment's model from its parts: augmentation, base, head, auxiliary classifiers; and its compile.

Kept apart from the training loop (transferbench.training.fit) and free of params parsing, so a model
is built and compiled with Keras, NumPy and a backend alone (benchmarks/gpu.py on a bare GPU machine).
"""

from __future__ import annotations

from typing import Any

import keras

from transferbench.data.task import Task
from transferbench.models.backbones import CORES, base_outputs
from transferbench.models.catalog import MODELS, HeadOptions
from transferbench.models.heads import aux_output_names, head_spec, output_names


def augmentation(name: str) -> keras.layers.Layer | None:
    """The experiment's augmentation layer; random layers are active in training only."""
    if name == "flip":
        return keras.layers.RandomFlip("horizontal", name="augment")
    return None


def assemble_model(model_name: str, core: keras.Model, image_shape: tuple[int, int, int], task: Task, *,
                   pooling: str, head: str, head_options: HeadOptions = HeadOptions(), augment: str = "none",
                   name: str = "model") -> keras.Model:
    """Pixels -> [augmentation] -> preprocessing -> ``core`` -> pooling -> head (+ auxiliary classifiers).

    Outputs are named ``output_names(task)``, then ``aux1``, ``aux2``.. for a model with auxiliary
    classifiers (see backbones.Core.aux_trunk); each aux output has the head's classifier and loss.
    """
    core_spec, spec = CORES.get(model_name), head_spec(head)
    inputs = keras.Input(tuple(image_shape), name="image")
    layer = augmentation(augment)
    pixels = layer(inputs) if layer is not None else inputs
    features, aux_maps = base_outputs(model_name, core, pixels, pooling)
    outputs = spec.build(features, task, head_options)
    for index, aux_map in enumerate(aux_maps, start=1):
        # Only a core with auxiliary classifiers (GoogLeNet) has extra outputs, and its builder has their trunk.
        assert core_spec.aux_trunk is not None, f"model {model_name!r}: extra core outputs but no aux_trunk"
        trunk = core_spec.aux_trunk(aux_map, f"aux{index}")
        outputs += [spec.classifier.layer(trunk, task, head_options, n) for n in aux_output_names(task, index)]
    return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=name)


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    return keras.optimizers.SGD(learning_rate, momentum=0.9)


def loss_weights(model_name: str, task: Task) -> dict[str, float]:
    """Output name -> loss weight: 1 for the task's outputs, the model's aux weights (GoogLeNet 0.3) for aux ones."""
    weights = {name: 1.0 for name in output_names(task)}
    for index, weight in enumerate(MODELS.get(model_name).aux_loss_weights, start=1):
        weights.update({name: float(weight) for name in aux_output_names(task, index)})
    return weights


def compile_outputs(model: keras.Model, model_name: str, head: str, task: Task,
                    optimizer: keras.optimizers.Optimizer, balanced: bool = False, **compile_args: Any) -> None:
    """Loss, loss weights and accuracy per output of a model built by :func:`assemble_model`; with
    ``balanced`` (one output), balanced accuracy too."""
    spec = head_spec(head)
    names = list(model.output_names)
    if len(names) > 1:
        weights = loss_weights(model_name, task)
        if sorted(weights) != sorted(names):
            raise ValueError(f"model outputs {names} do not match the expected {sorted(weights)}")
        model.compile(optimizer=optimizer, loss={n: spec.loss(task) for n in names},
                      loss_weights={n: weights[n] for n in names},
                      metrics={n: [spec.metric(task)] for n in names}, **compile_args)
    else:
        metrics = [spec.metric(task), *([spec.balanced_metric(task)] if balanced else [])]
        model.compile(optimizer=optimizer, loss=spec.loss(task), metrics=metrics, **compile_args)
