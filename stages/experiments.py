"""An experiment = one model trained on one dataset; its params section and what follows from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from stages.config import ConfigError, choice, integer, number, section, text, weights_source
from stages.datasets import DATASETS, DatasetSpec, Task

OPTIMIZERS = ("adam", "rmsprop", "sgd")
POOLINGS = ("max", "avg")

EXPERIMENT_SCHEMA = {
    "dataset": text,
    "model": text,
    "pooling": choice(*POOLINGS),
    "head": text,
    "optimizer": choice(*OPTIMIZERS),
    "learning_rate": number(0, open_low=True),
    "batch_size": integer(1),
    "epochs": integer(1),
    "reduce_lr": section({
        "factor": number(0, 1, open_low=True, open_high=True),
        "patience": integer(0),
        "min_lr": number(0),
    }),
}


def check_experiment(name: str, values: Any, params: Mapping[str, Any]) -> None:
    """Raise ConfigError unless ``experiments.<name>`` is complete, known and fits its dataset."""
    from stages.heads import check_head
    from stages.models import MODELS, check_input_shape

    where = f"experiments.{name}"
    section(EXPERIMENT_SCHEMA)(where, values)
    spec = DATASETS.get(values["dataset"])
    if values["dataset"] not in params:
        raise ConfigError(f"{where}.dataset is {values['dataset']!r} but params.yaml has no "
                          f"{values['dataset']!r} section; add it or pick one of: "
                          f"{', '.join(n for n in DATASETS.names() if n in params)}")
    model = MODELS.get(values["model"])
    dataset_values = params[values["dataset"]]
    check_input_shape(values["model"], spec.image_shape(dataset_values))
    check_head(values["head"], spec.task(dataset_values))
    # Initial weights (which may be a list of arms) are checked per run in stages.config.check_params.


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
