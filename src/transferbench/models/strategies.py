"""Fine-tuning strategies (reference study 001): which layers of the base train, in which phase, at which rate.

``full``       everything trains.
``partial``    the first ``freeze`` layers of the core never train (a count, as reference
               study 003's ``model.layers[:18]``, or a fraction 0 < f < 1 of them); the rest and the head train.
``frozen``     the core never trains: the base is a fixed feature extractor and only the head learns.
``two_phase``  ``head_epochs`` epochs with the core frozen at ``learning_rate``; then the core is
               unfrozen (all of it, or all but its first ``freeze`` layers) and training goes on,
               recompiled, at ``fine_tune_learning_rate`` (keras-io transfer-learning guide). Its
               BatchNormalization layers stay frozen in the second phase too, as in the guide, so
               small fine-tuning batches do not overwrite the statistics the base came with.

Layers are counted in the core's ``layers`` list (Keras' order, input layer first; see
``models.core_layer_count``). A frozen layer has ``trainable = False``, and in Keras 3 a
BatchNormalization layer with ``trainable = False`` also runs in inference mode. That flag is
what keeps a frozen base in inference mode: a Keras 3 functional model hands the outer call's
``training`` flag to every layer, so building the model with ``core(x, training=False)`` would
not stop ``fit`` from updating the moving statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

from transferbench.config.experiment import STRATEGIES, ExperimentBase, Partial, TwoPhase
from transferbench.core.errors import ConfigError

ALL = "all"


@dataclass(frozen=True)
class Phase:
    """A stretch of epochs trained with one set of frozen layers and one compiled optimizer."""

    name: str  # recorded in the resume state: "train", or "head" then "fine_tune"
    start: int  # first epoch, counted from 0
    end: int  # epochs done when the phase is over
    learning_rate: float
    freeze: int | float | str  # core layers that do not train: a count, a fraction, or ALL
    freeze_batchnorm: bool = False  # keep every BatchNormalization layer of the core frozen


def phases(settings: ExperimentBase) -> list[Phase]:
    """The experiment's phases, in order; they cover epochs 0 .. epochs - 1."""
    epochs, lr = settings.epochs, settings.learning_rate
    if isinstance(settings, Partial):
        return [Phase("train", 0, epochs, lr, settings.freeze)]
    if isinstance(settings, TwoPhase):
        head = settings.head_epochs
        return [Phase("head", 0, head, lr, ALL),
                Phase("fine_tune", head, epochs, settings.fine_tune_learning_rate, settings.freeze,
                      freeze_batchnorm=True)]
    if settings.strategy == "full":
        return [Phase("train", 0, epochs, lr, 0)]
    if settings.strategy == "frozen":
        return [Phase("train", 0, epochs, lr, ALL)]
    raise ConfigError(f"strategy {settings.strategy!r} is unknown; accepted: {', '.join(STRATEGIES)}")


def frozen_layer_count(freeze: int | float | str, n_layers: int) -> int:
    """How many of the core's first layers ``freeze`` means (a count, a fraction, or ALL)."""
    if freeze == ALL:
        return n_layers
    if isinstance(freeze, float):
        return round(freeze * n_layers)
    return int(freeze)


def apply(model, phase: Phase) -> bool:
    """Set every layer's ``trainable`` flag for ``phase``; True if any flag changed (recompile then)."""
    import keras

    from transferbench.models.backbones import core_of

    core = core_of(model)
    before = [layer.trainable for layer in model.layers] + [layer.trainable for layer in core.layers]
    for layer in model.layers:  # the head and everything around the core train in every phase
        layer.trainable = True
    n_frozen = frozen_layer_count(phase.freeze, len(core.layers))
    if n_frozen >= len(core.layers):
        core.trainable = False
    for index, layer in enumerate(core.layers):
        batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        if index < n_frozen or (phase.freeze_batchnorm and batchnorm):
            layer.trainable = False
    after = [layer.trainable for layer in model.layers] + [layer.trainable for layer in core.layers]
    return before != after


def check_freeze(where: str, settings: ExperimentBase, n_layers: int | None = None) -> None:
    """ConfigError unless ``freeze`` leaves layers of the core (``n_layers``, default: built to count them)
    both frozen (partial) and training.

    Params checking cannot say this (it builds no model): the stage that builds the core does, before training.
    """
    if not isinstance(settings, (Partial, TwoPhase)):
        return
    if n_layers is None:
        from transferbench.models.backbones import core_layer_count

        n_layers = core_layer_count(settings.model)
    freeze, lowest = settings.freeze, 1 if isinstance(settings, Partial) else 0
    n_frozen = frozen_layer_count(freeze, n_layers)
    if not lowest <= n_frozen < n_layers:
        meaning = "" if isinstance(freeze, int) else f" ({n_frozen} of them)"
        raise ConfigError(
            f"{where}.freeze is {freeze!r}{meaning} but {settings.model}'s core has {n_layers} layers; "
            f"accepted for {settings.strategy}: a layer count from {lowest} to {n_layers - 1}, or a fraction "
            f"0 < f < 1 that leaves {'at least one layer frozen and ' if lowest else ''}one layer training")
