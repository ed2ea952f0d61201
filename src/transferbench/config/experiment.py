"""An experiment's params section (``experiments.<name>``): one model trained on one dataset.

A section is one of four models, told apart by ``strategy`` (transferbench.models.strategies says
what each does); each takes the common keys plus exactly its own. ``schedule`` is one of three,
told apart by ``kind``. What needs the registries (dataset, model, head) is checked in
transferbench.study.experiments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from transferbench.config.sections import Section, problem
from transferbench.config.weights import OwnArms
from transferbench.core.errors import quoted

Count = Annotated[int, Field(ge=1)]
Rate = Annotated[float, Field(gt=0)]
Factor = Annotated[float, Field(gt=0, lt=1)]
Name = Annotated[str, Field(min_length=1)]


# ---- schedules --------------------------------------------------------------------------------

class Constant(Section):
    kind: Literal["constant"] = Field(description="no schedule, every epoch at the phase's rate")


class Plateau(Section):
    kind: Literal["plateau"] = Field(description="Keras' ReduceLROnPlateau on `monitor`")
    factor: Factor = Field(description="what the rate is multiplied by when `monitor` stops improving")
    patience: Annotated[int, Field(ge=0)] = Field(description="epochs without improvement before the rate drops")
    min_lr: Annotated[float, Field(ge=0)] = Field(description="the rate never drops below this")
    monitor: Literal["val_accuracy", "val_loss"] = Field(
        default="val_accuracy",
        description="val_accuracy: the task's outputs' accuracy (the mean over CAPTCHA heads); val_loss: Keras' total "
                    "validation loss (reference study 000's pets code)")


class Step(Section):
    kind: Literal["step"] = Field(description="epoch n (counted from 1 in its phase) trains at the phase's rate x "
                                              "factor ** floor(n / every), reference study 004's formula")
    factor: Factor = Field(description="what the rate is multiplied by every `every` epochs")
    every: Count = Field(description="epochs between drops (with 8, the 8th epoch is the first at the lower rate)")


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

    dataset: Name = Field(description="a registered dataset (transferbench.data.datasets) with its own section "
                                      "in params.yaml")
    model: Name = Field(description="a registered model (transferbench.models.catalog): cnn, googlenet, vgg16, "
                                    "xception")
    pooling: Literal["max", "avg", "flatten"] = Field(
        description="the base's feature map to a vector: global max, global average, or flatten")
    head: Name = Field(description="a registered head: dense, gap (needs pooling avg and head_units 0), svm "
                                   "(needs head_l2 > 0)")
    head_units: Annotated[int, Field(ge=0)] = Field(
        description="units of a hidden Dense (relu) layer before the classifier; 0 = none")
    head_dropout: Annotated[float, Field(ge=0, lt=1)] = Field(description="dropout before the classifier; 0 = none")
    head_l2: Annotated[float, Field(ge=0)] = Field(description="L2 penalty on the classifier's kernel")
    # Narrowed to one name by each strategy's model below.
    strategy: str = Field(description="which layers of the base train")
    augment: Literal["none", "flip"] = Field(description="flip: random horizontal flips, in training only")
    optimizer: Literal["adam", "rmsprop", "sgd"] = Field(description="sgd has momentum 0.9")
    learning_rate: Rate = Field(description="the optimizer's rate (the first phase's, for two_phase); tuning "
                                            "multiplies it by its factors")
    batch_size: Count = Field(description="images per step: the global batch, which data_parallel splits "
                                          "evenly over the devices")
    epochs: Count = Field(description="training epochs, both phases together for two_phase")
    schedule: Schedule = Field(description="the learning-rate schedule, told apart by `kind`")
    class_weight: Literal["none", "balanced"] = Field(
        default="none",
        description="balanced: each class weighs n / (classes x its count) in the training loss (sklearn's, "
                    "reference study 000's pets); one output only")
    fixed_features: bool | None = Field(
        default=None,
        description="this experiment's own `fixed_features`; unset: the top level's")
    weights: OwnArms = Field(
        default=None,
        description="this experiment's own arms, overriding the top-level `weights` (a model without ImageNet weights "
                    "sets none); unset: the top level's")

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

    strategy: Literal["full"] = Field(description="everything trains")


class Partial(ExperimentBase):
    """The first ``freeze`` layers of the core never train."""

    STRATEGY_KEYS = ("freeze",)
    strategy: Literal["partial"] = Field(description="the first `freeze` layers of the base never train")
    freeze: int | float = Field(description="a layer count >= 1, or a fraction 0 < f < 1 of the base's layers; "
                                            "one layer at least still trains (checked when the model is built)")

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze_range(cls, value: Any) -> int | float:
        return _freeze(value, lowest=1)


class Frozen(ExperimentBase):
    """The core never trains: only the head learns."""

    strategy: Literal["frozen"] = Field(description="the base never trains: only the head learns")


class TwoPhase(ExperimentBase):
    """``head_epochs`` with the core frozen, then fine-tuning (all but ``freeze`` layers) at its own rate."""

    STRATEGY_KEYS = ("head_epochs", "fine_tune_learning_rate", "freeze")
    strategy: Literal["two_phase"] = Field(description="`head_epochs` with the base frozen, then fine-tuning of "
                                                       "all but `freeze` layers at its own rate")
    head_epochs: Count = Field(description="epochs of the first phase, base frozen; fewer than `epochs`")
    fine_tune_learning_rate: Rate = Field(description="the second phase's rate")
    freeze: int | float = Field(description="layers still frozen in the second phase: a count (0 = none) or a "
                                            "fraction 0 < f < 1 of the base's layers")

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
