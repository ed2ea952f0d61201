"""Reads params.yaml and rejects anything unknown or out of range before a stage does work.

Every stage calls :func:`load_params`, which checks the whole file, so a bad value anywhere stops
the first stage that runs (generation included), not the stage that happens to read it. Checking
imports no Keras and builds no model: what needs a built model (``freeze`` against the core's layer
count) is checked by the stage that builds it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationInfo, create_model, field_serializer, field_validator

from transferbench.config.experiment import STRATEGIES, ExperimentSection, require_tag, root_of
from transferbench.config.extraction import Extraction
from transferbench.config.sections import Section, parse, problem
from transferbench.config.weights import IMAGENET, RANDOM, Arm, parse_arms
from transferbench.core import paths
from transferbench.core.errors import ConfigError, quoted
from transferbench.core.inputs import shown
from transferbench.core.registry import Registry
from transferbench.data.datasets import DATASETS, DatasetParams
from transferbench.models.catalog import HEADS, MODELS, HeadOptions, check_head


def each_once(value: list[float], what: str) -> list[float]:
    """A list of numbers that names each once (a repeat would train the same runs twice)."""
    if len(set(value)) != len(value):
        raise problem(f"{{where}} {value} names {what} twice; accepted: each once")
    return value


class Tuning(Section):
    """The learning-rate budget every arm gets alike, each choosing on the validation split only.

    ``grid``: before its runs, an arm trains one short trial per factor (the recipe's every rate times
    it, ``epochs`` of its schedule, at least one epoch, on the run's training images and first seed)
    and keeps the factor whose trial scored best on validation (ties: the one nearest the recipe's).
    ``none``: every arm trains at its reference study's rate as published, untuned.
    """

    kind: Literal["grid", "none"]
    factors: Annotated[list[Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)]], Field(min_length=1)]
    epochs: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]  # share of the arm's epochs per trial

    @field_validator("factors")
    @classmethod
    def _distinct(cls, value: list[float]) -> list[float]:
        return each_once(value, "a factor")


# An experiment's name becomes folders (models/<name>/, reports/<name>/), DVC stage names (train@<name>) and
# run names: one path component that means the same on every system, and short enough for every path below.
EXPERIMENT_NAME = "[A-Za-z][A-Za-z0-9_]{0,63}"


def check_experiment_name(name: Any) -> None:
    """A problem unless ``name`` (a key of ``experiments:``) is a safe identifier (EXPERIMENT_NAME)."""
    if not isinstance(name, str) or not re.fullmatch(EXPERIMENT_NAME, name, flags=re.ASCII):
        raise problem(f"{{where}} has the name {quoted(name)}; accepted: names matching {EXPERIMENT_NAME} "
                      "(a letter, then at most 63 ASCII letters, digits or '_'), as the name becomes folders "
                      "and DVC stage names")


class Params(Section):
    """params.yaml: initial weights, seeds, experiments, and one section per registered dataset (see params_model)."""

    weights: tuple[Arm, ...]  # every experiment trains once per arm (unless it sets its own weights)
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)]  # data generation and splits; training seeds start here
    seeds: Annotated[int, Field(ge=1, le=100)]  # training runs per arm
    experiments: Annotated[dict[str, ExperimentSection], Field(min_length=1)]
    fixed_features: bool = False  # a fixed-feature arm beside every pretrained arm (experiments may override)
    # One device, or every visible accelerator training one model on shares of each batch
    # (transferbench.training.distribution); the batch sizes stay global.
    distribution: Literal["none", "data_parallel"] = "none"
    # Nested shares of the training split (same validation and test): one run per share per arm and seed.
    train_fraction: Annotated[list[Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]],
                              Field(min_length=1)] = [1.0]
    tuning: Tuning = Tuning(kind="none", factors=[1.0], epochs=1.0)
    # The random arm's epochs, as a multiple of the recipe's (He et al. 2019: given time, random
    # initialisation catches up); 1 = the same schedule as the pretrained arms.
    random_schedule: Annotated[float, Field(ge=1, le=10, allow_inf_nan=False)] = 1.0
    # What one downloaded archive may unpack to (transferbench.config.extraction); read by fetch@.
    extraction: Extraction = Extraction()

    @field_validator("weights", mode="before")
    @classmethod
    def _arms(cls, value: Any, info: ValidationInfo) -> tuple[Arm, ...]:
        return parse_arms(value, root_of(info))

    @field_serializer("weights")
    def _sources(self, arms: tuple[Arm, ...]) -> list[str]:
        return [arm.source for arm in arms]

    @field_validator("train_fraction")
    @classmethod
    def _fractions_distinct(cls, value: list[float]) -> list[float]:
        return each_once(value, "a share")

    @field_validator("experiments", mode="before")
    @classmethod
    def _names_and_strategies(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            for name in value:
                check_experiment_name(name)
            for name, experiment in value.items():
                require_tag(experiment, "strategy", STRATEGIES, key=str(name))
        return value

    def has_dataset(self, name: str) -> bool:
        return name in DATASETS and getattr(self, name, None) is not None

    def dataset(self, name: str) -> DatasetParams:
        """The typed section of dataset ``name``; ConfigError if params.yaml has none."""
        if not self.has_dataset(name):
            present = [n for n in DATASETS.names() if self.has_dataset(n)]
            raise ConfigError(f"params.yaml has no {name!r} section; add one, or use one of: {', '.join(present)}")
        section = getattr(self, name)
        assert isinstance(section, DatasetParams)
        return section

    def sources(self, experiment: str) -> tuple[Arm, ...]:
        """The experiment's initial weights: its own ``weights`` if it sets them, else the top level's."""
        return self.experiments[experiment].weights or self.weights

    def arms(self, experiment: str) -> tuple[Arm, ...]:
        """Every arm the experiment trains: each source, followed, when ``fixed_features`` is on, by its
        second setting (``-fixed``, or ``-tuned`` when the experiment's own strategy freezes the base)."""
        settings = self.experiments[experiment]
        fixed = self.fixed_features if settings.fixed_features is None else settings.fixed_features
        variant = "tuned" if settings.strategy == "frozen" else "fixed"
        arms: list[Arm] = []
        for arm in self.sources(experiment):
            arms.append(arm)
            if fixed and arm.source != RANDOM:
                arms.append(dataclasses.replace(arm, variant=variant))
        return tuple(arms)


@functools.cache
def _params_model(datasets: tuple[str, ...]) -> type[Params]:
    fields: dict[str, Any] = {name: (DATASETS.get(name).params_model | None, None) for name in datasets}
    return create_model("Params", __base__=Params, **fields)


def params_model() -> type[Params]:
    """Params with an optional section for every registered dataset (a new dataset is one registry entry)."""
    return _params_model(tuple(DATASETS.names()))


def check_params(params: Any, root: Path | str = paths.ROOT) -> Params:
    """Check a whole params mapping (relative weights paths start at ``root``); return it typed."""
    if isinstance(params, Params):
        return params
    if not isinstance(params, Mapping):
        raise ConfigError(f"params.yaml must be a mapping, got {type(params).__name__}")
    checked = parse(params_model(), params, context={"root": Path(root)})
    for name in checked.experiments:
        check_experiment(checked, name)
    return checked


def check_experiment(params: Params, name: str) -> None:
    """What one section cannot say alone: registered names, the dataset's section, sizes, head and arms."""
    where, settings = f"experiments.{name}", params.experiments[name]
    _registered(DATASETS, f"{where}.dataset", settings.dataset)
    if not params.has_dataset(settings.dataset):
        present = [n for n in DATASETS.names() if params.has_dataset(n)]
        raise ConfigError(f"{where}.dataset is {settings.dataset!r} but params.yaml has no {settings.dataset!r} "
                          f"section; add it or pick one of: {', '.join(present)}")
    model = MODELS.get(_registered(MODELS, f"{where}.model", settings.model))
    dataset = params.dataset(settings.dataset)
    if min(dataset.height, dataset.width) < model.min_size:
        raise ConfigError(f"{where}: image size {dataset.width}x{dataset.height} ({settings.dataset}.width x "
                          f"height) is under {settings.model}'s minimum {model.min_size}x{model.min_size}; "
                          f"accepted: height and width >= {model.min_size}")
    _registered(HEADS, f"{where}.head", settings.head)
    task = DATASETS.get(settings.dataset).task(dataset)
    try:
        check_head(settings.head, task, settings.pooling, HeadOptions.of(settings))
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    if model.imagenet is None and any(arm.source == IMAGENET for arm in params.sources(name)):
        key, own = (f"{where}.weights", "") if settings.weights else ("weights", f", here or as {where}.weights")
        raise ConfigError(f"{key} has imagenet, but {where} trains model {settings.model!r}, which has no ImageNet "
                          f"weights; accepted: weights=none{own}, or a weights file for it")
    if settings.class_weight == "balanced" and (task.n_outputs > 1 or model.aux_loss_weights):
        what = f"{task.n_outputs} outputs" if task.n_outputs > 1 else f"{settings.model}'s auxiliary classifiers"
        raise ConfigError(f"{where}.class_weight is 'balanced' but the model has {what}, and Keras weighs classes "
                          "of a single output only; accepted: class_weight none here")


def _registered(registry: Registry, where: str, name: str) -> str:
    if name not in registry:
        raise ConfigError(f"{where} is {quoted(name)}; accepted: {', '.join(registry.names())}")
    return name


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with a key twice (PyYAML keeps the last silently; DVC refuses)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden by a key of its own
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: PyYAML's own error says so
                continue
            if first is not None:
                raise ConfigError(f"{shown(key_node.start_mark.name)}: key {quoted(key)} appears twice, on lines "
                                  f"{first} and {line}; accepted: each key once in a mapping (remove one)")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_params_file(path: Path | str = paths.PARAMS) -> Any:
    """The parsed YAML of ``path``, unchecked; a duplicate key or a syntax error is a ConfigError naming the line."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{shown(path)}:{mark.line + 1}" if mark else shown(path)
        raise ConfigError(f"{where}: not valid YAML ({err.problem}); fix the file") from None


def load_params(path: Path | str = paths.PARAMS) -> Params:
    """params.yaml, checked; relative weights paths start at its folder."""
    return check_params(read_params_file(path), root=Path(path).resolve().parent)
