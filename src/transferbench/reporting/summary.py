"""The report's summary as types: what summarise computes and readme, figures and summary.json read.

Statistics stay as the statistics modules return them: ``Stat`` (stats.mean_interval: mean, std, n, low,
high; epochs to stability adds how many runs it left out) and ``Comparison`` (verdict.compare: the
difference, its interval, p-values). ``to_json`` gives summary.json's shape, which people read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from transferbench.reporting.read import Missing

Stat = dict[str, Any]  # stats.mean_interval's {"mean", "std", "n", "low", "high"}
Comparison = dict[str, Any]  # verdict.compare's, or {"setting", "against", "metric", "no_result"} without runs


@dataclass
class ArmResult:
    """One arm's runs at one share: which they are, and the mean and interval of every per-run number."""

    runs: list[str]
    n: int
    seeds: list[int]
    setting: str
    loss_definition: list[str]
    stats: dict[str, Stat] = field(default_factory=dict)  # test_accuracy, ..., epochs_to_stability
    best_phase: list[str] | None = None  # None without runs
    labels: dict[str, str] | None = None  # run -> curve label; None without runs

    def get(self, key: str) -> Stat | None:
        return self.stats.get(key)

    def to_json(self) -> dict:
        extra = {} if self.best_phase is None else {"best_phase": self.best_phase, "labels": self.labels}
        return {"runs": self.runs, "n": self.n, "seeds": self.seeds, "setting": self.setting,
                "loss_definition": self.loss_definition, **self.stats, **extra}


@dataclass
class Task:
    n_classes: int
    n_outputs: int
    chance: float
    chance_margin: float
    validation_images: int | None
    class_weight: str
    captcha: dict | None  # {"length", "style"}


@dataclass
class PublishedFigure:
    """A reference study's figure, with our mean for the same metric and arm (None: no run)."""

    weights: str
    metric: str
    values: list[float]
    note: str
    ours: Stat | None


@dataclass
class Published:
    source: str
    recipe: str
    figures: list[PublishedFigure]


@dataclass
class PerClass:
    kind: str  # "class", or "position" for CAPTCHAs
    arms: dict[str, dict[str, float]]  # arm -> class -> accuracy, mean over seeds


@dataclass
class ShareArm:
    n: int
    metric: Stat | None  # the verdict metric over seeds
    train_images: list[int]
    setting: str


@dataclass
class Share:
    """The answer at one share of the training split."""

    train_fraction: float
    arms: dict[str, ShareArm]
    comparisons: dict[str, Comparison]


@dataclass
class ExperimentSummary:
    dataset: str
    model: str
    arms: list[str]
    settings: dict[str, str]
    planned_seeds: list[int]
    train_fractions: list[float]
    main_fraction: float
    task: Task
    verdict_metric: str
    pretrained_arm: str | None
    results: dict[str, ArmResult]
    difference: dict[str, dict[str, float]]  # "<arm> - none" -> number -> pretrained mean minus random
    no_result: dict[str, str]  # "pretrained" / "random" -> why there is none
    missing: list[Missing]
    ignored_run_folders: list[str]
    published_not_comparable: str | None
    published: Published | None
    comparisons: dict[str, Comparison]  # pretrained arm -> against random, at the main share
    time_to_accuracy: dict[str, list[dict]]
    per_class: PerClass | None
    budget: dict[str, dict]  # arm -> budget.arm_budget
    data_size: list[Share]


@dataclass
class OverallRow:
    experiment: str
    dataset: str
    model: str
    pretrained_arm: str | None
    pretrained: dict[str, Any]  # a few of the arm's stats and n, or {"n": 0, "no_result"}
    random: dict[str, Any]
    difference: dict[str, float]


@dataclass
class MissingRun:
    experiment: str
    run: str
    reason: str


@dataclass
class Summary:
    """summary.json: definitions, the overall rows, every experiment, missing runs, figure links."""

    definitions: dict[str, Any]
    overall: list[OverallRow]
    experiments: dict[str, ExperimentSummary]
    missing: list[MissingRun]
    figures: dict[str, dict[str, str]]  # experiment -> label -> path relative to reports/


def to_json(value: Any) -> Any:
    """Dataclasses as dicts (``to_json`` where one is defined), containers recursively."""
    if hasattr(value, "to_json"):
        return to_json(value.to_json())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def rounded(value: Any, digits: int = 6) -> Any:
    """Floats rounded, so float noise in the last bits cannot change summary.json's bytes or the README."""
    if isinstance(value, float):
        return round(value, digits)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: rounded(getattr(value, f.name), digits)
                                             for f in dataclasses.fields(value)})
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value
