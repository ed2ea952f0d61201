"""An experiment = one model trained on one dataset; one of its runs, resolved from params.

Each arm trains in one of three settings (Kornblith, Shlens & Le, 2019), and :func:`arm_recipe`
is the one place that says what each setting trains:

``random``          random initialisation (``none``), the whole model trained (strategy full,
                    whatever the experiment's own strategy is);
``fixed_features``  the pretrained base frozen, a linear head on the experiment's pooling (a Dense
                    softmax / sigmoid, or the SVM if the experiment's head is svm; no hidden layer,
                    no dropout), the experiment's optimizer, rate, schedule and epochs (``-fixed``);
``fine_tuned``      the experiment's own recipe.

An experiment whose own recipe already freezes the base (strategy frozen) keeps that recipe as its
pretrained arm, in setting ``fixed_features``; its ``-tuned`` arm is the fine-tuned one: the same
model with the whole base training, at the experiment's rate.

Params may give the random arm a longer schedule (``random_schedule``), and every arm the same
learning-rate budget (``tuning``): :func:`with_rate` and :func:`trial` make a recipe's variants for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transferbench.config.experiment import STRATEGY_MODELS, STRATEGY_ONLY_KEYS, ExperimentBase, TwoPhase
from transferbench.config.weights import FINE_TUNED, FIXED_FEATURES, RANDOM, RANDOM_INIT, Arm
from transferbench.core.errors import ConfigError
from transferbench.data.datasets import DATASETS, DatasetParams, DatasetSpec, Task
from transferbench.study.params import Params


@dataclass(frozen=True)
class Experiment:
    """Everything a stage needs to know about one run of an experiment: its sections, its arm, its seed."""

    name: str
    settings: ExperimentBase  # what this arm trains: the experiment's section, or its setting's recipe
    dataset: str
    dataset_settings: DatasetParams  # the typed section of its dataset
    spec: DatasetSpec
    arm: Arm
    seed: int
    setting: str  # random, fixed_features or fine_tuned
    train_fraction: float = 1.0  # the share of the training split this run sees (nested subsets)
    data_seed: int = 0  # params' seed: draws the shares of the training split, the same for every run

    @property
    def task(self) -> Task:
        return self.spec.task(self.dataset_settings)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.dataset_settings.image_shape

    @property
    def weights(self) -> str:
        """The arm's source as params give it: imagenet, none or a path."""
        return self.arm.source

    @property
    def weights_label(self) -> str:
        """The arm's name in run names: imagenet, none, file-<name>, with -fixed / -tuned for a second setting."""
        return self.arm.label


def _recipe(settings: ExperimentBase, strategy: str, **changes: Any) -> ExperimentBase:
    """``settings`` as ``strategy`` (the old strategy's own keys dropped), with ``changes``."""
    values = settings.model_dump(exclude={"weights", "strategy", *STRATEGY_ONLY_KEYS})
    return STRATEGY_MODELS[strategy].model_validate({**values, "strategy": strategy, **changes})


def arm_recipe(settings: ExperimentBase, arm: Arm) -> tuple[ExperimentBase, str]:
    """What ``arm`` trains (the experiment's section, or a setting's recipe built from it) and its setting."""
    own_setting = FIXED_FEATURES if settings.strategy == "frozen" else FINE_TUNED
    if arm.source == RANDOM:
        return (settings if settings.strategy == "full" else _recipe(settings, "full")), RANDOM_INIT
    if arm.variant == "fixed":
        head = "svm" if settings.head == "svm" else "dense"
        return _recipe(settings, "frozen", head=head, head_units=0, head_dropout=0.0), FIXED_FEATURES
    if arm.variant == "tuned":
        return _recipe(settings, "full"), FINE_TUNED
    return settings, own_setting


# What checkpoints and tuning trials choose by: the task's outputs only (the mean over CAPTCHA heads,
# no auxiliary classifier; transferbench.training.fit.EpochSummary).
MONITOR = "val_accuracy"
BALANCED_MONITOR = "val_balanced_accuracy"


def monitor(settings: ExperimentBase) -> str:
    """Balanced accuracy where training balances the classes (class_weight balanced: one output), else accuracy."""
    return BALANCED_MONITOR if settings.class_weight == "balanced" else MONITOR


def longer(settings: ExperimentBase, factor: float) -> ExperimentBase:
    """``settings`` trained ``factor`` times as many epochs (rounded); the schedule's own keys unchanged."""
    return settings if factor == 1 else settings.model_copy(update={"epochs": max(1, round(settings.epochs * factor))})


def with_rate(settings: ExperimentBase, factor: float) -> ExperimentBase:
    """``settings`` with every learning rate of the recipe times ``factor`` (both of two_phase's)."""
    changes: dict[str, Any] = {"learning_rate": settings.learning_rate * factor}
    if isinstance(settings, TwoPhase):
        changes["fine_tune_learning_rate"] = settings.fine_tune_learning_rate * factor
    return settings.model_copy(update=changes)


def trial_epochs(settings: ExperimentBase, share: float) -> int:
    """Epochs of a tuning trial: ``share`` of the recipe's, at least one (two: one per phase for two_phase)."""
    return max(2 if isinstance(settings, TwoPhase) else 1, round(settings.epochs * share))


def trial(settings: ExperimentBase, factor: float, share: float) -> ExperimentBase:
    """A tuning trial: rates times ``factor``, ``share`` of the epochs; two_phase keeps its split of them."""
    epochs = trial_epochs(settings, share)
    changes: dict[str, Any] = {"epochs": epochs}
    if isinstance(settings, TwoPhase):
        changes["head_epochs"] = min(epochs - 1, max(1, round(settings.head_epochs * epochs / settings.epochs)))
    return with_rate(settings, factor).model_copy(update=changes)


def resolve(params: Params, name: str) -> Experiment:
    """Experiment ``name`` at its first arm and the first training seed (transferbench.study.runs gives every run)."""
    if name not in params.experiments:
        raise ConfigError(f"unknown experiment {name!r}; valid: {', '.join(sorted(params.experiments))}")
    return at_arm(params, name, params.arms(name)[0])


def at_arm(params: Params, name: str, arm: Arm) -> Experiment:
    """Experiment ``name`` trained from ``arm``, in the arm's setting, at the first training seed."""
    section = params.experiments[name]
    settings, setting = arm_recipe(section, arm)
    if arm.source == RANDOM:
        settings = longer(settings, params.random_schedule)
    return Experiment(name=name, settings=settings, dataset=section.dataset,
                      dataset_settings=params.dataset(section.dataset), spec=DATASETS.get(section.dataset),
                      arm=arm, seed=params.seed, setting=setting, data_seed=params.seed)
