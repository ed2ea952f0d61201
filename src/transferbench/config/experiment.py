"""An experiment's params section (``experiments.<name>``): one model trained on one dataset.

A section is one of four models, told apart by ``strategy`` (transferbench.models.strategies says
what each does); each takes the common keys plus exactly its own. ``schedule`` is one of three,
told apart by ``kind``. What needs the registries (dataset, model, head) is checked in
transferbench.study.experiments.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_serializer, field_validator, model_validator

from transferbench.config.sections import Section, problem
from transferbench.config.weights import Arm, parse_arms
from transferbench.core import paths
from transferbench.core.errors import quoted

Count = Annotated[int, Field(ge=1)]
Rate = Annotated[float, Field(gt=0)]
Factor = Annotated[float, Field(gt=0, lt=1)]
Name = Annotated[str, Field(min_length=1)]


# ---- schedules --------------------------------------------------------------------------------
# plateau: ReduceLROnPlateau on `monitor` (val_accuracy, the default, or val_loss as seed 000's pets
# code); step: epoch n (counted from 1 in its phase) trains at
# the phase's rate x factor ** floor(n / every), seed 004's formula (with every 8 the 8th epoch is
# the first at the lower rate); constant: no schedule.

class Constant(Section):
    kind: Literal["constant"]


class Plateau(Section):
    kind: Literal["plateau"]
    factor: Factor
    patience: Annotated[int, Field(ge=0)]
    min_lr: Annotated[float, Field(ge=0)]
    # val_accuracy: the task's outputs only (mean over CAPTCHA heads); val_loss: Keras' total loss
    monitor: Literal["val_accuracy", "val_loss"] = "val_accuracy"


class Step(Section):
    kind: Literal["step"]
    factor: Factor
    every: Count


SCHEDULES = ("constant", "plateau", "step")
Schedule = Annotated[Constant | Plateau | Step, Field(discriminator="kind")]


def require_tag(value: Any, tag: str, accepted: tuple[str, ...], key: str | None = None) -> Any:
    """A discriminated section must be a mapping that names its kind; say which kinds there are."""
    if not isinstance(value, Mapping) or tag not in value:
        raise problem(f"{{where}} must be a mapping with `{tag}` ({', '.join(accepted)}) and the keys that "
                      f"{tag} takes, got {quoted(value)}", key=key)
    return value


# ---- experiments ------------------------------------------------------------------------------

class ExperimentBase(Section):
    """The keys every experiment has (``dvc exp run -S experiments.<name>.<key>=...``)."""

    STRATEGY_KEYS: ClassVar[tuple[str, ...]] = ()  # what this strategy adds to the common keys

    dataset: Name  # a registered dataset with its own section in params.yaml
    model: Name  # a registered model: cnn, googlenet, vgg16, xception
    pooling: Literal["max", "avg", "flatten"]
    head: Name  # a registered head: dense, gap (needs pooling avg), svm (needs head_l2 > 0)
    head_units: Annotated[int, Field(ge=0)]  # hidden Dense(relu) before the classifier; 0 = none
    head_dropout: Annotated[float, Field(ge=0, lt=1)]  # dropout before the classifier; 0 = none
    head_l2: Annotated[float, Field(ge=0)]  # L2 on the classifier's kernel
    strategy: str  # narrowed to one name by each strategy's model below
    augment: Literal["none", "flip"]
    optimizer: Literal["adam", "rmsprop", "sgd"]
    learning_rate: Rate
    batch_size: Count
    epochs: Count
    schedule: Schedule
    # balanced: each class weighs n / (classes x its count) in the training loss (sklearn's "balanced",
    # seed 000's pets); single-output tasks only.
    class_weight: Literal["none", "balanced"] = "none"
    # Adds a fixed-feature arm beside each pretrained arm; None = the top-level `fixed_features`.
    fixed_features: bool | None = None
    # The experiment's own arms, overriding the top-level `weights` (a model without ImageNet weights).
    weights: tuple[Arm, ...] | None = None

    @classmethod
    def accepted_keys(cls) -> list[str]:
        return [k for k in ExperimentBase.model_fields if k != "weights"] + list(cls.STRATEGY_KEYS) + ["weights"]

    @model_validator(mode="before")
    @classmethod
    def _strategy_keys(cls, data: Any) -> Any:
        # Runs before the unknown-key check: a key of another strategy deserves a better message.
        if not isinstance(data, Mapping):
            return data
        strategy = data.get("strategy")
        for key in STRATEGY_ONLY_KEYS:
            users = [s for s, model in STRATEGY_MODELS.items() if key in model.STRATEGY_KEYS]
            if key in data and key not in cls.STRATEGY_KEYS:
                raise problem(f"{{where}} is for strategy {' / '.join(users)}, not {strategy}; "
                              f"remove it, or set strategy to {' or '.join(users)}", key=key)
        for key in cls.STRATEGY_KEYS:
            if key not in data:
                raise problem(f"{{where}}: strategy {strategy} needs {key}; add it "
                              f"(`dvc exp run -S +{{where}}.{key}=...`); {strategy} takes: "
                              f"{', '.join(cls.STRATEGY_KEYS)}")
        return data

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_kind(cls, value: Any) -> Any:
        return require_tag(value, "kind", SCHEDULES)

    @field_validator("weights", mode="before")
    @classmethod
    def _arms(cls, value: Any, info: ValidationInfo) -> tuple[Arm, ...]:
        return parse_arms(value, root_of(info))

    @field_serializer("weights")
    def _sources(self, arms: tuple[Arm, ...] | None) -> list[str] | None:
        return None if arms is None else [arm.source for arm in arms]


def root_of(info: ValidationInfo) -> Path:
    """The folder relative weights paths start from (the repository, unless the caller says otherwise)."""
    return Path((info.context or {}).get("root", paths.ROOT))


def _freeze(value: Any, lowest: int) -> int | float:
    """``freeze``: a layer count >= ``lowest``, or a fraction 0 < f < 1 of the core's layers."""
    accepted = f"a layer count >= {lowest} (an integer), or a fraction 0 < f < 1 of the core's layers"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise problem(f"{{where}} must be {accepted}, got {quoted(value)}")
    if (isinstance(value, float) and not 0 < value < 1) or (isinstance(value, int) and value < lowest):
        raise problem(f"{{where}} is {quoted(value)}; accepted: {accepted}")
    return value


class Full(ExperimentBase):
    """Everything trains."""

    strategy: Literal["full"]


class Partial(ExperimentBase):
    """The first ``freeze`` layers of the core never train."""

    STRATEGY_KEYS = ("freeze",)
    strategy: Literal["partial"]
    freeze: int | float

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze_range(cls, value: Any) -> int | float:
        return _freeze(value, lowest=1)


class Frozen(ExperimentBase):
    """The core never trains: only the head learns."""

    strategy: Literal["frozen"]


class TwoPhase(ExperimentBase):
    """``head_epochs`` with the core frozen, then fine-tuning (all but ``freeze`` layers) at its own rate."""

    STRATEGY_KEYS = ("head_epochs", "fine_tune_learning_rate", "freeze")
    strategy: Literal["two_phase"]
    head_epochs: Count  # < epochs
    fine_tune_learning_rate: Rate
    freeze: int | float  # layers still frozen in phase 2; 0 = none

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze_range(cls, value: Any) -> int | float:
        return _freeze(value, lowest=0)

    @model_validator(mode="after")
    def _head_epochs_below_epochs(self) -> TwoPhase:
        if self.head_epochs >= self.epochs:
            raise problem(f"{{where}}.head_epochs is {self.head_epochs} but epochs is {self.epochs}: nothing would "
                          "be left to fine-tune; accepted: 1 <= head_epochs < epochs (or strategy frozen to train "
                          "the head alone)")
        return self


STRATEGY_MODELS: dict[str, type[ExperimentBase]] = {
    "full": Full, "partial": Partial, "frozen": Frozen, "two_phase": TwoPhase,
}
STRATEGIES = tuple(STRATEGY_MODELS)
STRATEGY_ONLY_KEYS = tuple(dict.fromkeys(k for model in STRATEGY_MODELS.values() for k in model.STRATEGY_KEYS))

ExperimentSection = Annotated[Full | Partial | Frozen | TwoPhase, Field(discriminator="strategy")]
