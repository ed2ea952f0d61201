"""Reads params.yaml and rejects anything unknown or out of range before a stage does work.

Every stage calls :func:`load_params`, which checks the whole file, so a bad value anywhere stops
the first stage that runs (generation included), not the stage that happens to read it. Checking
imports no Keras and builds no model: what needs a built model (``freeze`` against the core's layer
count) is checked by the stage that builds it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, field_validator

from transferbench.config.experiment import STRATEGIES, ExperimentSection, require_tag
from transferbench.config.extraction import Extraction
from transferbench.config.sections import Section, parse, problem
from transferbench.config.weights import IMAGENET, RANDOM, Arm, Arms
from transferbench.core import paths
from transferbench.core.errors import ConfigError, quoted
from transferbench.core.inputs import shown
from transferbench.core.registry import Registry
from transferbench.data.datasets import (
    DATASETS,
    CaptchaParams,
    CatsAndDogsFilteredParams,
    Cifar10Params,
    DatasetParams,
    DogsVsCatsParams,
    PetsParams,
)
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

    kind: Literal["grid", "none"] = Field(
        description="grid: each arm first trains one trial per factor and keeps the best by validation accuracy; "
                    "none: the reference studies' rates exactly (the random arm inherits the pretrained arm's)")
    factors: Annotated[list[Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)]], Field(min_length=1)] = Field(
        description="what the recipe's every rate is multiplied by, one trial each (each factor once)")
    epochs: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = Field(
        description="a trial's share of the arm's epochs and schedule (at least one epoch), at its first seed on "
                    "each share of the training split")

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
    """params.yaml whole: the study's settings, one optional section per registered dataset, and the experiments.

    Every key's description is what docs/params.md lists (``python -m tools.params_doc --write``).
    """

    weights: Arms = Field(
        description="initial weights of every model's base; every experiment trains once per entry (arm): "
                    "imagenet is Keras' ImageNet weights (fetched once and hash-checked), none random "
                    "initialisation; an experiment may set its own")
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = Field(
        description="one seed for data generation and splits; training seeds are seed, seed + 1, ...")
    seeds: Annotated[int, Field(ge=1, le=100)] = Field(
        description="training runs per arm, for a mean and a spread; the verdict needs 2 and counts on 3")
    experiments: Annotated[dict[str, ExperimentSection], Field(min_length=1)] = Field(
        description="one model trained on one dataset each, by name (the name becomes folders and DVC stage "
                    "names: a letter, then up to 63 ASCII letters, digits or '_')")
    fixed_features: bool = Field(
        default=False,
        description="every pretrained arm also trains as a fixed feature extractor, arm <label>-fixed (base frozen, a "
                    "linear head on the experiment's pooling); an experiment whose strategy is frozen adds "
                    "<label>-tuned (the whole base fine-tuned) instead (Kornblith, Shlens & Le 2019's three settings)")
    distribution: Literal["none", "data_parallel"] = Field(
        default="none",
        description="devices per training run: none (the backend's default device) or data_parallel (every visible "
                    "GPU, else every device of the backend, each training a copy of the model on an equal share of "
                    "every batch); batch sizes stay global")
    # transferbench.core.devices: k slots per GPU, each process a 1/k share of its memory.
    gpu_runs_per_device: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1,
        description="training runs one GPU holds at once; the train stage runs GPUs x this many of its runs and trials "
                    "at once in worker processes")
    train_fraction: Annotated[list[Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]],
                              Field(min_length=1)] = Field(
        default=[1.0],
        description="shares of the training split, each a run per arm and seed: nested subsets drawn by seed, the same "
                    "validation and test (each share once)")
    tuning: Tuning = Field(
        default=Tuning(kind="none", factors=[1.0], epochs=1.0),
        description="the learning-rate budget every arm gets alike, chosen on validation only")
    random_schedule: Annotated[float, Field(ge=1, le=10, allow_inf_nan=False)] = Field(
        default=1.0,
        description="the random arm's epochs as a multiple of the recipe's (He et al. 2019: random initialisation "
                    "catches up given a longer schedule); 1 = the same epochs")
    extraction: Extraction = Field(
        default=Extraction(),
        description="what one downloaded archive may unpack to, checked from its directory before anything is written")
    # One optional section per dataset in DATASETS, under its registered name (tests/unit/test_config.py
    # checks that the two agree).
    captcha: CaptchaParams | None = Field(
        default=None,
        description="reference study 000's generated CAPTCHAs: how many, their size, characters and style")
    cats_and_dogs_filtered: CatsAndDogsFilteredParams | None = Field(
        default=None,
        description="Google's cats_and_dogs_filtered zip: image size, splits and where it comes from")
    cifar10: Cifar10Params | None = Field(
        default=None,
        description="CIFAR-10: image size, validation split and where it comes from")
    dogs_vs_cats: DogsVsCatsParams | None = Field(
        default=None,
        description="Kaggle's Dogs vs. Cats: image size, splits and where it comes from")
    pets: PetsParams | None = Field(
        default=None,
        description="Open Images cat / dog / bird: image size and where it comes from")

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
        return name in DATASETS and name in type(self).model_fields and getattr(self, name) is not None

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


def check_params(params: Any, root: Path | str = paths.ROOT) -> Params:
    """Check a whole params mapping (relative weights paths start at ``root``); return it typed."""
    if isinstance(params, Params):
        return params
    if not isinstance(params, Mapping):
        raise ConfigError(f"params.yaml must be a mapping, got {type(params).__name__}")
    checked = parse(Params, params, context={"root": Path(root)})
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
