"""An experiment's runs: one per initial weights ("arm") and training seed, each with its own folders.

`weights` (top level, or an experiment's own `weights`) is one source or a list of them, so one
`dvc repro` trains the pretrained and the random arm, and `dvc exp run -S weights=none` trains one.
`seeds` repeats every arm with training seeds seed, seed + 1, ... for a mean and a spread, and
`train_fraction` repeats each at every share of the training split, for the answer across data sizes.
`fixed_features` adds a second setting beside each pretrained arm (transferbench.study.experiments).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from transferbench.core import paths
from transferbench.core.errors import ConfigError
from transferbench.study.experiments import Experiment, at_arm
from transferbench.study.params import Params


def arm_experiments(params: Params, name: str) -> list[Experiment]:
    """Experiment ``name`` once per arm (each in its setting, see study.experiments), at the first training seed."""
    return [at_arm(params, name, arm) for arm in params.arms(name)]


def runs(params: Params, name: str) -> list[Experiment]:
    """Every run of experiment ``name``: arms x shares of the training split x seeds, in that order."""
    return [dataclasses.replace(arm, seed=params.seed + i, train_fraction=fraction)
            for arm in arm_experiments(params, name) for fraction in params.train_fraction
            for i in range(params.seeds)]


def fraction_label(fraction: float) -> str:
    """A share of the training split as run names write it: ``0.05``; empty for the whole split."""
    return "" if fraction == 1 else format(fraction, "g")


def run_name(experiment: Experiment) -> str:
    """Folder name of a run, e.g. ``imagenet-s42``, or ``none-f0.05-s42`` on 5% of the training split;
    also the suffix of its MLflow run name."""
    share = fraction_label(experiment.train_fraction)
    return f"{experiment.weights_label}{f'-f{share}' if share else ''}-s{experiment.seed}"


def init_dir(experiment: Experiment) -> Path:
    """Where the weights stage leaves this arm's initial weights: one folder per source, shared by its settings."""
    return paths.init_dir(experiment.name) / experiment.arm.source_label


def model_dir(experiment: Experiment) -> Path:
    """The trained model, its history and its MLflow run id (outputs of the train stage)."""
    return paths.experiment_model_dir(experiment.name) / "runs" / run_name(experiment)


def report_dir(experiment: Experiment) -> Path:
    """Test metrics, history copy, confusion matrix and curves of one run (outputs of evaluate).

    Under reports/runs/ for every experiment, so the report stage depends on that one folder and
    adding an experiment needs no edit of dvc.yaml.
    """
    return paths.REPORTS / "runs" / experiment.name / run_name(experiment)


def train_subset(n: int, fraction: float, seed: int) -> np.ndarray | None:
    """Sorted indices of the first ``fraction`` of a permutation of ``n`` images drawn by ``seed``; None for all.

    One permutation for every share, so the shares are nested: the 5% are inside the 20%.
    """
    if fraction == 1:
        return None
    order = np.random.default_rng([seed, n]).permutation(n)
    return np.sort(order[:training_images(n, fraction)])


def training_images(n: int, fraction: float) -> int:
    """How many of an ``n``-image training split a run on ``fraction`` of it trains on (train_subset's count)."""
    return n if fraction == 1 else max(1, round(n * fraction))


def check_batch_fits(params: Params, name: str, n_train: int) -> None:
    """ConfigError unless experiment ``name``'s batch fits its smallest training set (``n_train`` images in the
    prepared training split, times the smallest train_fraction): a larger batch never fills one step."""
    settings, smallest = params.experiments[name], min(params.train_fraction)
    images = training_images(n_train, smallest)
    if settings.batch_size > images:
        share = f" x train_fraction {smallest:g}" if smallest < 1 else ""
        raise ConfigError(f"experiments.{name}.batch_size is {settings.batch_size}, more than the {images:,} images "
                          f"its runs train on ({settings.dataset}'s training split of {n_train:,}{share}); "
                          f"accepted: batch_size <= {images}, or more training images")
