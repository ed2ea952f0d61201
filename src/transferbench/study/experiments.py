"""An experiment = one model trained on one dataset; one of its runs, resolved from params."""

from __future__ import annotations

from dataclasses import dataclass

from transferbench.config.experiment import ExperimentBase
from transferbench.config.weights import Arm
from transferbench.core.errors import ConfigError
from transferbench.data.datasets import DATASETS, DatasetParams, DatasetSpec, Task
from transferbench.study.params import Params


@dataclass(frozen=True)
class Experiment:
    """Everything a stage needs to know about one run of an experiment: its sections, its arm, its seed."""

    name: str
    settings: ExperimentBase  # the typed experiments.<name> section
    dataset: str
    dataset_settings: DatasetParams  # the typed section of its dataset
    spec: DatasetSpec
    arm: Arm
    seed: int

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
        """Short name of the initial weights for run names: imagenet, none, or the file's name."""
        return self.arm.label


def resolve(params: Params, name: str) -> Experiment:
    """Experiment ``name`` at its first arm and the first training seed (transferbench.study.runs gives every run)."""
    if name not in params.experiments:
        raise ConfigError(f"unknown experiment {name!r}; valid: {', '.join(sorted(params.experiments))}")
    settings = params.experiments[name]
    return Experiment(name=name, settings=settings, dataset=settings.dataset,
                      dataset_settings=params.dataset(settings.dataset), spec=DATASETS.get(settings.dataset),
                      arm=params.arms(name)[0], seed=params.seed)
