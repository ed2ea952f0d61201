"""Reads params.yaml and rejects anything unknown or out of range before a stage does work.

Every stage calls :func:`load_params`, which checks the whole file, so a bad value anywhere stops
the first stage that runs (generation included), not the stage that happens to read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from stages import paths


class ConfigError(ValueError):
    """A parameter is unknown, missing or out of range; the message names it and what is accepted."""


Checker = Callable[[str, Any], None]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
WEIGHT_CHOICES = ("imagenet", "none")


def integer(minimum: int | None = None, maximum: int | None = None) -> Checker:
    def check(where: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{where} must be >= {minimum}, got {value!r}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{where} must be <= {maximum}, got {value!r}")

    return check


def number(low: float | None = None, high: float | None = None, *, open_low: bool = False,
           open_high: bool = False) -> Checker:
    def check(where: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if low is not None and (value <= low if open_low else value < low):
            raise ConfigError(f"{where} must be {'>' if open_low else '>='} {low}, got {value!r}")
        if high is not None and (value >= high if open_high else value > high):
            raise ConfigError(f"{where} must be {'<' if open_high else '<='} {high}, got {value!r}")

    return check


def choice(*choices: str) -> Checker:
    def check(where: str, value: Any) -> None:
        if value not in choices:
            raise ConfigError(f"{where} is {value!r}; accepted: {', '.join(choices)}")

    return check


def text(where: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string, got {value!r}")


def section(schema: Mapping[str, Checker]) -> Checker:
    """A mapping with exactly the keys of ``schema``, each checked by its checker."""

    def check(where: str, value: Any) -> None:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping with keys {', '.join(schema)}, got {value!r}")
        unknown = sorted(set(value) - set(schema))
        if unknown:
            raise ConfigError(f"unknown key {where}.{unknown[0]}; accepted: {', '.join(schema)}")
        missing = [k for k in schema if k not in value]
        if missing:
            raise ConfigError(f"missing key {where}.{missing[0]}")
        for key, checker in schema.items():
            checker(f"{where}.{key}", value[key])

    return check


def weights_source(value: Any, root: Path = paths.ROOT) -> str | Path:
    """``'imagenet'``, ``'none'`` or the path of an existing HDF5 weights file."""
    if value is None:  # YAML `weights: null` means the same as `none`
        return "none"
    if not isinstance(value, str) or not value:
        raise ConfigError(f"weights is {value!r}; accepted: imagenet, none, or a path to a .h5 weights file")
    if value in WEIGHT_CHOICES:
        return value
    path = Path(value)
    if not path.is_absolute():
        path = root / path
    if not path.name.endswith(".h5"):
        raise ConfigError(
            f"weights is {value!r}; accepted: imagenet, none, or a path to a Keras weights file ending in .h5"
        )
    if not path.is_file():
        raise ConfigError(f"weights file {value!r} does not exist (looked at {path}); "
                          "accepted: imagenet, none, or a path to an existing .h5 weights file")
    with open(path, "rb") as f:
        if f.read(8) != HDF5_SIGNATURE:
            raise ConfigError(f"weights file {value!r} is not an HDF5 file (corrupt or another format); "
                              "save one with `model.save_weights('name.weights.h5')`")
    return path


def check_params(params: Any) -> dict:
    """Check a whole params mapping; return it unchanged."""
    from stages.datasets import DATASETS
    from stages.experiments import check_experiment

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
    from stages.models import MODELS
    from stages.runs import check_arms

    sources = _listed(experiment.get("weights", params["weights"]))
    for source in sources:
        if weights_source(source) == "imagenet" and MODELS.get(experiment["model"]).imagenet is None:
            raise ConfigError(f"model {experiment['model']!r} (experiments.{name}) has no ImageNet weights; "
                              f"accepted: weights=none, here or as experiments.{name}.weights, or a weights file for it")
    check_arms({**params, "experiments": {name: experiment}})


def load_params(path: Path | str = paths.PARAMS) -> dict:
    with open(path, encoding="utf-8") as f:
        return check_params(yaml.safe_load(f))
