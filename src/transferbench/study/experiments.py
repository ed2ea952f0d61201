"""An experiment = one model trained on one dataset; its params section and what follows from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from transferbench.core.errors import ConfigError
from transferbench.config.checks import choice, integer, number, section, text
from transferbench.data.datasets import DATASETS, DatasetSpec, Task

OPTIMIZERS = ("adam", "rmsprop", "sgd")  # sgd: momentum 0.9
POOLINGS = ("max", "avg", "flatten")
AUGMENTATIONS = ("none", "flip")
# `schedule.kind` -> its other keys. plateau: ReduceLROnPlateau on val_accuracy; step: epoch n
# (counted from 1 in its phase) trains at the phase's rate x factor ** floor(n / every), seed 004's
# formula (with every 8 the 8th epoch is the first at the lower rate); constant: no schedule.
SCHEDULES = {
    "constant": {},
    "plateau": {
        "factor": number(0, 1, open_low=True, open_high=True),
        "patience": integer(0),
        "min_lr": number(0),
    },
    "step": {
        "factor": number(0, 1, open_low=True, open_high=True),
        "every": integer(1),
    },
}


def _schedule(where: str, value: Any) -> None:
    if not isinstance(value, Mapping) or "kind" not in value:
        raise ConfigError(f"{where} must be a mapping with `kind` ({', '.join(SCHEDULES)}) and that kind's keys, "
                          f"got {value!r}")
    choice(*SCHEDULES)(f"{where}.kind", value["kind"])
    section({"kind": text, **SCHEDULES[value["kind"]]})(where, value)


def _freeze(where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a layer count (an integer) or a fraction 0 < f < 1 of the core's "
                          f"layers, got {value!r}")
    if isinstance(value, float) and not 0 < value < 1:
        raise ConfigError(f"{where} is {value!r}; accepted: a fraction 0 < f < 1 of the core's layers, "
                          "or a layer count (an integer)")
    if isinstance(value, int) and value < 0:
        raise ConfigError(f"{where} is {value!r}; accepted: a layer count >= 0, or a fraction 0 < f < 1")


# Every experiment has exactly these keys (`dvc exp run -S experiments.<name>.<key>=...`), those of its
# strategy below, and optionally its own `weights` (checked in transferbench.config.checks).
EXPERIMENT_SCHEMA = {
    "dataset": text,                        # a registered dataset with its own section in params.yaml
    "model": text,                          # registered model: cnn, googlenet, vgg16, xception
    "pooling": choice(*POOLINGS),           # core's feature map -> vector: global max / average, flatten
    "head": text,                           # registered head: dense, gap (needs pooling avg), svm
    "head_units": integer(0),               # hidden Dense(relu) before the classifier; 0 = none
    "head_dropout": number(0, 1, open_high=True),  # dropout before the classifier; 0 = none
    "head_l2": number(0),                   # L2 on the classifier's kernel; svm needs > 0
    "strategy": text,                       # full, partial, frozen, two_phase (transferbench.models.strategies)
    "augment": choice(*AUGMENTATIONS),      # flip: random horizontal flips, in training only
    "optimizer": choice(*OPTIMIZERS),
    "learning_rate": number(0, open_low=True),
    "batch_size": integer(1),
    "epochs": integer(1),
    "schedule": _schedule,                  # {kind: constant} | {kind: plateau, factor, patience, min_lr}
                                            # | {kind: step, factor, every}
}
# Keys only some strategies take (transferbench.models.strategies.STRATEGY_KEYS says which); another strategy refuses them.
STRATEGY_SCHEMA = {
    "freeze": _freeze,                      # partial: core layers never trained, a count >= 1 or a
                                            # fraction; two_phase: layers still frozen in phase 2 (0 = none)
    "head_epochs": integer(1),              # two_phase: epochs with the core frozen, < epochs
    "fine_tune_learning_rate": number(0, open_low=True),  # two_phase: the rate once the core is unfrozen
}


def _check_strategy_keys(where: str, values: Any) -> None:
    """The strategy is known, and the experiment has exactly the strategy-dependent keys it takes."""
    from transferbench.models.strategies import STRATEGIES, STRATEGY_KEYS

    if not isinstance(values, Mapping) or "strategy" not in values:
        return  # section() reports it
    strategy = values["strategy"]
    choice(*STRATEGIES)(f"{where}.strategy", strategy)
    takes = STRATEGY_KEYS[strategy]
    for key in STRATEGY_SCHEMA:
        users = [s for s, keys in STRATEGY_KEYS.items() if key in keys]
        if key in values and key not in takes:
            raise ConfigError(f"{where}.{key} is for strategy {' / '.join(users)}, not {strategy}; "
                              f"remove it, or set strategy to {' or '.join(users)}")
        if key not in values and key in takes:
            raise ConfigError(f"{where}: strategy {strategy} needs {key}; add it "
                              f"(`dvc exp run -S +{where}.{key}=...`); {strategy} takes: {', '.join(takes)}")


def check_experiment(name: str, values: Any, params: Mapping[str, Any]) -> None:
    """Raise ConfigError unless ``experiments.<name>`` is complete, known and fits its dataset."""
    from transferbench.models.heads import HeadOptions, check_head
    from transferbench.models.backbones import MODELS, check_input_shape
    from transferbench.models.strategies import STRATEGY_KEYS, check_strategy

    where = f"experiments.{name}"
    _check_strategy_keys(where, values)
    strategy_keys = STRATEGY_KEYS.get(values.get("strategy"), ()) if isinstance(values, Mapping) else ()
    section({**EXPERIMENT_SCHEMA, **{k: STRATEGY_SCHEMA[k] for k in strategy_keys}})(where, values)
    spec = DATASETS.get(values["dataset"])
    if values["dataset"] not in params:
        raise ConfigError(f"{where}.dataset is {values['dataset']!r} but params.yaml has no "
                          f"{values['dataset']!r} section; add it or pick one of: "
                          f"{', '.join(n for n in DATASETS.names() if n in params)}")
    MODELS.get(values["model"])
    dataset_values = params[values["dataset"]]
    check_input_shape(values["model"], spec.image_shape(dataset_values))
    check_head(values["head"], spec.task(dataset_values), values["pooling"], HeadOptions.of(values))
    check_strategy(where, values)
    # Initial weights (which may be a list of arms) are checked per run in transferbench.config.checks.check_params.


@dataclass(frozen=True)
class Experiment:
    """Everything a stage needs to know about one experiment, resolved from params."""

    name: str
    values: Mapping[str, Any]
    dataset: str
    dataset_values: Mapping[str, Any]
    spec: DatasetSpec
    weights: str  # imagenet | none | the path as given
    seed: int

    @property
    def task(self) -> Task:
        return self.spec.task(self.dataset_values)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.spec.image_shape(self.dataset_values)

    @property
    def weights_label(self) -> str:
        """Short name of the initial weights for run names: imagenet, none, or the file's name."""
        return self.weights if self.weights in ("imagenet", "none") else f"file-{self.weights.rsplit('/', 1)[-1]}"


def resolve(params: Mapping[str, Any], name: str) -> Experiment:
    experiments = params["experiments"]
    if name not in experiments:
        raise ConfigError(f"unknown experiment {name!r}; valid: {', '.join(sorted(experiments))}")
    values = experiments[name]
    weights = values.get("weights", params["weights"])
    weights = weights[0] if isinstance(weights, list) and weights else weights  # a run picks its own arm
    weights = "none" if weights is None else weights
    return Experiment(name=name, values=values, dataset=values["dataset"],
                      dataset_values=params[values["dataset"]], spec=DATASETS.get(values["dataset"]),
                      weights=str(weights), seed=params["seed"])
