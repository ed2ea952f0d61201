"""Reading the runs: every planned run's files under reports/runs/<experiment>/<run>/ (history.csv, metrics.json,
confusion.csv, predictions.npz), checked, into a ``Run`` per run and an ``ExperimentRuns`` per experiment."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from transferbench.core import paths
from transferbench.core.errors import BadInput
from transferbench.core.files import read_json
from transferbench.reporting.budget import planned_budget
from transferbench.reporting.settings import SETTING_TITLES, setting_of
from transferbench.reporting.stability import (
    DID_NOT_LEARN,
    STILL_IMPROVING,
    chance_margin,
    epochs_to_stability,
)
from transferbench.reporting.stats import balanced_accuracy
from transferbench.reporting.verdict import (
    verdict_metric,
)
from transferbench.study import runs
from transferbench.study.experiments import Experiment
from transferbench.study.params import Params

HISTORY_COLUMNS = ("epoch", "accuracy", "val_accuracy", "loss", "val_loss")


# Loss may legitimately be NaN (a diverged epoch); accuracies and epochs never are.
NO_NAN_COLUMNS = ("epoch", "accuracy", "val_accuracy", "seconds")


# Cumulative training seconds at each epoch's end; runs recorded before it was kept have epochs only.
OPTIONAL_HISTORY_COLUMNS = ("seconds",)


METRICS_KEYS = ("test.accuracy", "test.loss", "best_val_accuracy", "epochs", "seconds")


PREDICTION_ARRAYS = ("target", "predicted")


class ReportError(BadInput):
    """An input file is missing a column or key, or holds a value that is not a number."""


def curve_label(run: Run, chance: float, margin: float) -> str | None:
    """DID_NOT_LEARN, STILL_IMPROVING or None (the curve peaked before its end, above chance)."""
    if run.best_val_accuracy <= chance + margin:
        return DID_NOT_LEARN
    if run.best_epoch >= int(run.history["epoch"].iloc[-1]):
        return STILL_IMPROVING
    return None


def read_history(path: Path) -> pd.DataFrame:
    """history.csv with its required columns checked: numbers only, epochs increasing from >= 1."""
    try:
        # Only a literal nan (what Keras writes for a diverged loss) is NaN; empty cells and text are errors.
        history = pd.read_csv(path, keep_default_na=False, na_values=["nan", "NaN"])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: not a readable CSV file ({err})") from None
    for column in HISTORY_COLUMNS:
        if column not in history.columns:
            raise ReportError(f"{path}: no column {column!r}; found: {', '.join(map(str, history.columns))}; "
                              f"required: {', '.join(HISTORY_COLUMNS)}")
    if history.empty:
        raise ReportError(f"{path}: no rows (no epoch was recorded)")
    optional = [c for c in OPTIONAL_HISTORY_COLUMNS if c in history.columns]
    for column in (*HISTORY_COLUMNS, *optional):
        values = pd.to_numeric(history[column], errors="coerce")
        bad = values.isna() & (history[column].notna() | (column in NO_NAN_COLUMNS))
        if bad.any():
            row = int(bad.argmax())  # the first bad row's position (history has the default RangeIndex)
            raise ReportError(f"{path}: column {column!r} has {str(history[column].iloc[row])!r} at data row "
                              f"{row + 1}; expected a number")
        history[column] = values
    epochs = history["epoch"]
    increasing = epochs.is_monotonic_increasing and not epochs.duplicated().any()
    if (epochs % 1 != 0).any() or epochs.iloc[0] < 1 or not increasing:
        raise ReportError(f"{path}: column 'epoch' must be whole numbers increasing from 1 or more, "
                          f"got {epochs.tolist()[:10]}")
    history["epoch"] = epochs.astype(int)
    return history


def read_metrics(path: Path) -> dict:
    """metrics.json with the keys the report uses checked."""
    try:
        metrics = read_json(path)
    except ValueError as err:
        raise ReportError(f"{path}: not valid JSON ({err})") from None
    for key in METRICS_KEYS:
        value: Any = metrics
        for part in key.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise ReportError(f"{path}: no key {key!r}; required: {', '.join(METRICS_KEYS)}")
            value = value[part]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ReportError(f"{path}: {key} is {value!r}; expected a number")
    if "setting" in metrics and metrics["setting"] not in SETTING_TITLES:
        raise ReportError(f"{path}: setting is {metrics['setting']!r}; accepted: {', '.join(SETTING_TITLES)}")
    for key in ("per_class_accuracy",):
        table = metrics.get(key, {})
        if not isinstance(table, Mapping) or not all(is_number(v) for v in table.values()):
            raise ReportError(f"{path}: {key} is {table!r}; expected {{class name: accuracy}}")
    return metrics


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """predictions.npz's ``target`` and ``predicted``: equal shapes, (n,) or (n, positions), whole numbers."""
    try:
        with np.load(path) as data:
            names = list(data.files)
            arrays = [data[name] for name in PREDICTION_ARRAYS if name in names]
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ReportError(f"{path}: not a readable .npz file ({err}); rerun its evaluate stage") from None
    if len(arrays) != len(PREDICTION_ARRAYS):
        raise ReportError(f"{path}: arrays {names}; required: {', '.join(PREDICTION_ARRAYS)}")
    target, predicted = arrays
    if (target.shape != predicted.shape or target.ndim not in (1, 2) or not len(target)
            or not all(np.issubdtype(a.dtype, np.integer) for a in arrays)):
        raise ReportError(f"{path}: target {target.shape} {target.dtype} and predicted {predicted.shape} "
                          f"{predicted.dtype} must be integer arrays of one shape, (n,) or (n, positions)")
    return target, predicted


def read_confusion(path: Path) -> pd.DataFrame:
    """confusion.csv: rows true class (first column ``true``), columns predicted, counts."""
    table = pd.read_csv(path, index_col=0)
    if list(map(str, table.index)) != list(map(str, table.columns)):
        raise ReportError(f"{path}: rows {list(table.index)} and columns {list(table.columns)} must name the "
                          "same classes in the same order")
    numeric = table.apply(pd.to_numeric, errors="coerce")
    if numeric.isna().any().any():
        raise ReportError(f"{path}: every cell must be a count")
    numeric.index = numeric.index.map(str)
    return numeric


@dataclass
class Missing:
    """A planned run not found, and why."""

    run: str
    reason: str


@dataclass
class Run:
    """One training run's results as read from its report folder."""

    name: str  # e.g. imagenet-s42, none-f0.05-s42
    weights: str
    seed: int
    history: pd.DataFrame
    metrics: dict
    confusion: pd.DataFrame | None
    predictions: tuple[np.ndarray, np.ndarray] | None = None  # target, predicted (test-manifest order)
    predictions_file: Path | None = None
    train_fraction: float = 1.0
    label: str | None = None  # DID_NOT_LEARN, STILL_IMPROVING or None; set by collect, which knows chance

    @property
    def setting(self) -> str:
        return str(self.metrics.get("setting") or setting_of(self.weights))

    @property
    def stability(self) -> int | None:
        return epochs_to_stability(self.history["epoch"].tolist(), self.history["val_accuracy"].tolist())

    @property
    def best_val_accuracy(self) -> float:
        """The run's best validation accuracy: its history's maximum (the one definition the report uses)."""
        return float(self.history["val_accuracy"].max())

    @property
    def best_epoch(self) -> int:
        """The checkpoint's epoch as evaluate recorded it, else the first epoch of the history's maximum."""
        recorded = self.metrics.get("best_epoch")
        if isinstance(recorded, (int, float)) and not isinstance(recorded, bool):
            return int(recorded)
        return int(self.history["epoch"].iloc[int(self.history["val_accuracy"].argmax())])

    @property
    def balanced_accuracy(self) -> float | None:
        """Mean recall over the test set's classes (single-output tasks): from predictions.npz, else metrics.json
        (test.balanced_accuracy, or the mean of per_class_accuracy: evaluate's recall of each class present),
        else confusion.csv."""
        if self.predictions is not None and self.predictions[0].ndim == 1:
            return balanced_accuracy(*self.predictions)
        value, per_class = self.metrics["test"].get("balanced_accuracy"), self.metrics.get("per_class_accuracy")
        if is_number(value):
            return float(value)
        if per_class:
            return float(np.mean(list(per_class.values())))
        if self.confusion is not None:  # runs evaluated before per-class accuracy was kept
            counts = self.confusion.to_numpy(dtype=float)
            present = counts.sum(axis=1) > 0
            return float(np.mean(np.diag(counts)[present] / counts.sum(axis=1)[present]))
        return None

    def values(self) -> dict[str, float]:
        """Every per-run number the report aggregates over seeds."""
        test = self.metrics["test"]
        out = {
            "test_accuracy": test["accuracy"],
            "test_balanced_accuracy": self.balanced_accuracy,
            "test_loss": test["loss"],
            "best_val_accuracy": self.best_val_accuracy,
            "best_epoch": self.best_epoch,
            "last_val_accuracy": float(self.history["val_accuracy"].iloc[-1]),
            "last_train_accuracy": float(self.history["accuracy"].iloc[-1]),
            "epochs_to_stability": self.stability if self.label is None else None,
            "epochs": self.metrics["epochs"],
            "seconds": self.metrics["seconds"],
        }
        if "sequence_accuracy" in test:
            out["test_sequence_accuracy"] = test["sequence_accuracy"]
        # A run that never stabilised (or is labelled) has no epochs to stability; summarise counts it instead.
        return {k: float(v) for k, v in out.items() if v is not None}


@dataclass
class ExperimentRuns:
    """What params plan for one experiment and what was found of it."""

    name: str
    dataset: str
    model: str
    arms: list[str]  # weights labels, in params order
    seeds: list[int]
    runs: list[Run] = field(default_factory=list)  # at the main share (the largest planned)
    missing: list[Missing] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # run folders params do not plan
    planned_settings: dict[str, str] = field(default_factory=dict)  # arm -> setting, as params plan it
    fractions: list[float] = field(default_factory=lambda: [1.0])  # shares of the training split, ascending
    all_runs: list[Run] = field(default_factory=list)  # every share's
    class_weight: str = "none"
    n_classes: int = 2
    n_outputs: int = 1
    validation_images: int | None = None  # None: params do not say (official splits)
    plan: dict[str, dict] = field(default_factory=dict)  # arm -> what params give it (see budget.planned)
    captcha: dict | None = None  # {"length", "style"} for a CAPTCHA experiment

    @property
    def main_fraction(self) -> float:
        return max(self.fractions)

    def by_arm(self, arm: str, fraction: float | None = None) -> list[Run]:
        """The arm's runs at ``fraction`` (default: the main share)."""
        if fraction is None or fraction == self.main_fraction:
            return [r for r in self.runs if r.weights == arm]
        return [r for r in self.all_runs if r.weights == arm and r.train_fraction == fraction]

    def setting(self, arm: str) -> str:
        """What the arm's runs recorded, else what params plan, else what its label says."""
        recorded = [r.metrics["setting"] for r in self.all_runs if r.weights == arm and r.metrics.get("setting")]
        return recorded[0] if recorded else self.planned_settings.get(arm) or setting_of(arm)

    @property
    def settings(self) -> dict[str, str]:
        return {arm: self.setting(arm) for arm in self.arms}

    @property
    def chance(self) -> float:
        """Accuracy of guessing uniformly, per output."""
        return 1 / self.n_classes

    @property
    def margin(self) -> float:
        return chance_margin(self.chance, self.validation_images)

    @property
    def verdict_metric(self) -> str:
        return verdict_metric(self.class_weight, self.n_outputs)


def collect(params: Params, reports_root: Path) -> list[ExperimentRuns]:
    """Read every planned run of every experiment; absent runs are recorded as missing, with why."""
    collected = []
    for name in params.experiments:
        planned = runs.runs(params, name)
        found = describe(params, name, planned)
        for experiment in planned:
            run = read_run(experiment, reports_root, found)
            if run is not None:
                run.label = curve_label(run, found.chance, found.margin)
                found.all_runs.append(run)
        found.runs = [r for r in found.all_runs if r.train_fraction == found.main_fraction]
        same_test_set(found.all_runs)
        planned_names = {runs.run_name(e) for e in planned}
        runs_dir = reports_root / "runs" / name
        if runs_dir.is_dir():
            found.ignored = sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and p.name not in planned_names)
        collected.append(found)
    return collected


def describe(params: Params, name: str, planned: Sequence[Experiment]) -> ExperimentRuns:
    """What params say of experiment ``name``: arms, seeds, shares, its task and every arm's plan."""
    settings, first = params.experiments[name], planned[0]
    section = params.dataset(settings.dataset)
    validation = getattr(section, "validation", None)
    captcha = ({"length": first.task.n_outputs, "style": getattr(section, "style", "plain")}
               if settings.dataset == "captcha" else None)
    return ExperimentRuns(
        name=name, dataset=settings.dataset, model=settings.model,
        arms=list(dict.fromkeys(e.weights_label for e in planned)), seeds=sorted({e.seed for e in planned}),
        planned_settings={e.weights_label: e.setting for e in planned},
        fractions=sorted({e.train_fraction for e in planned}), class_weight=settings.class_weight,
        n_classes=first.task.n_classes, n_outputs=first.task.n_outputs,
        validation_images=validation if isinstance(validation, int) else None,
        plan={e.weights_label: planned_budget(e, params.tuning) for e in planned}, captcha=captcha)


def read_run(experiment: Experiment, reports_root: Path, found: ExperimentRuns) -> Run | None:
    """One planned run's folder, or None after recording it as missing."""
    run_name = runs.run_name(experiment)
    folder = reports_root / runs.report_dir(experiment).relative_to(paths.REPORTS)
    absent = [f for f in ("metrics.json", "history.csv") if not (folder / f).is_file()]
    if not folder.is_dir() or absent:
        reason = "no run folder" if not folder.is_dir() else f"no {' or '.join(absent)}"
        found.missing.append(Missing(run_name, f"{reason} in {folder.relative_to(reports_root)}"))
        return None
    confusion, predictions = folder / "confusion.csv", folder / "predictions.npz"
    return Run(name=run_name, weights=experiment.weights_label, seed=experiment.seed,
               history=read_history(folder / "history.csv"), metrics=read_metrics(folder / "metrics.json"),
               confusion=read_confusion(confusion) if confusion.is_file() else None,
               predictions=read_predictions(predictions) if predictions.is_file() else None,
               predictions_file=predictions if predictions.is_file() else None,
               train_fraction=experiment.train_fraction)


def same_test_set(found: Sequence[Run]) -> None:
    """Every run's ``target`` must be the first's: a paired comparison over images needs one test set."""
    with_predictions = [r for r in found if r.predictions is not None]
    for run in with_predictions[1:]:
        first = with_predictions[0]
        if not np.array_equal(first.predictions[0], run.predictions[0]):  # type: ignore[index]
            raise ReportError(f"{run.predictions_file} and {first.predictions_file}: different 'target' arrays, "
                              "so not the same test set in the same order; rerun both runs' evaluate stage")
