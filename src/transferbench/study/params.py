"""Reads params.yaml and rejects anything unknown or out of range before a stage does work.

Every stage calls :func:`load_params`, which checks the whole file, so a bad value anywhere stops
the first stage that runs (generation included), not the stage that happens to read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from transferbench.config.checks import integer, weights_source
from transferbench.core import paths
from transferbench.core.errors import ConfigError


def check_params(params: Any) -> dict:
    """Check a whole params mapping; return it unchanged."""
    from transferbench.data.datasets import DATASETS
    from transferbench.study.experiments import check_experiment

    if not isinstance(params, Mapping):
        raise ConfigError(f"params.yaml must be a mapping, got {type(params).__name__}")
    top_level = ["weights", "seed", "seeds", "experiments", *DATASETS.names()]
    unknown = sorted(set(params) - set(top_level))
    if unknown:
        raise ConfigError(f"unknown top-level key {unknown[0]!r} in params.yaml; accepted: {', '.join(top_level)}")
    for key in ("weights", "seed", "seeds", "experiments"):
        if key not in params:
            raise ConfigError(f"missing top-level key {key!r} in params.yaml")
    for source in _listed(params["weights"]):
        weights_source(source)
    integer(0, 2**32 - 1)("seed", params["seed"])
    integer(1, 100)("seeds", params["seeds"])
    for name in DATASETS.names():
        if name in params:
            DATASETS.get(name).check_params(name, params[name])
    experiments = params["experiments"]
    if not isinstance(experiments, Mapping) or not experiments:
        raise ConfigError("experiments must be a non-empty mapping of experiment name -> settings")
    for name, experiment in experiments.items():
        if not isinstance(experiment, Mapping):
            raise ConfigError(f"experiments.{name} must be a mapping of settings, got {experiment!r}")
        # `weights` is the one key an experiment may add: its own arms, overriding the top level.
        check_experiment(name, {k: v for k, v in experiment.items() if k != "weights"}, params)
        _check_arms(name, experiment, params)
    return dict(params)


def _listed(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _check_arms(name: str, experiment: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Every initial-weights source of the experiment exists and fits its model."""
    from transferbench.models.backbones import MODELS
    from transferbench.study.runs import check_arms

    sources = _listed(experiment.get("weights", params["weights"]))
    for source in sources:
        if weights_source(source) == "imagenet" and MODELS.get(experiment["model"]).imagenet is None:
            raise ConfigError(f"model {experiment['model']!r} (experiments.{name}) has no ImageNet weights; "
                              f"accepted: weights=none, here or as experiments.{name}.weights, or a weights file for it")
    check_arms({**params, "experiments": {name: experiment}})


def load_params(path: Path | str = paths.PARAMS) -> dict:
    with open(path, encoding="utf-8") as f:
        return check_params(yaml.safe_load(f))
