"""Stage `report`: the project's answer, pretrained against random initialisation, per experiment.

Reads every run that params.yaml plans (transferbench.study.runs: arms x shares x seeds) from
reports/runs/<experiment>/<run>/ (history.csv, metrics.json, confusion.csv, predictions.npz) and writes:

- reports/README.md: the page to read first: the answer (per experiment and pretrained setting against
  random initialisation: the difference with its interval over seeds and test images, then the verdict,
  Holm-adjusted over the report: transferbench.reporting.verdict), what each arm was given
  (reporting.budget), tables per experiment and overall, the answer across data sizes (reporting.data_size),
  time to accuracy, per-class accuracy, the reference studies' figures beside ours, missing runs, figures;
- reports/summary.json: the same numbers as data (sorted keys, no timestamps);
- reports/curves.csv: every run's curves (main share) in long format, for `dvc plots` (template
  .dvc/plots/pretrained_vs_random.json: pretrained and random as separate lines);
- reports/data_size.csv: each arm's verdict metric per share of the training split (x train_images, y mean);
- reports/figures/<experiment>-curves.png (and -confusion.png for single-output tasks, -data-size.png with
  several shares): one folder, so dvc.yaml names it once whatever the experiments are.

The main tables use the runs at the largest planned share. Then it logs each experiment's figures to its
runs in MLflow, under ``report/``; when MLflow is unreachable or a run id is unknown it warns and goes on:
the files are the product.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from transferbench.config.weights import RANDOM  # every other arm counts as pretrained
from transferbench.core import paths
from transferbench.core.errors import BadInput, ConfigError
from transferbench.core.files import read_json, write_json, write_text
from transferbench.plots import comparison_curves, confusion_matrices, data_size_curves
from transferbench.reporting import data_size
from transferbench.reporting.answer import (
    COMPARABLE_METRICS,
    answer_table,
    metric_title,
    per_class_table,
    time_table,
    time_to_accuracy,
)
from transferbench.reporting.budget import arm_budget, budget_rule, budget_table, distinct, planned_budget
from transferbench.reporting.data_size import DATA_SIZE_FIGURE, data_size_lines
from transferbench.reporting.formatting import (
    FINE_TUNED,
    SETTING_TITLES,
    arm_title,
    fmt_difference,
    fmt_stat,
    fmt_value,
    markdown_table,
    setting_of,
)
from transferbench.reporting.reference_studies import METRICS as PUBLISHED_METRICS
from transferbench.reporting.reference_studies import PUBLISHED
from transferbench.reporting.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, balanced_accuracy, mean_interval
from transferbench.reporting.verdict import (
    ALPHA,
    FAMILY,
    METRIC_TITLES,
    RESULT_KEYS,
    apply_holm,
    compare,
    helped,
    interval_metrics,
    verdict_metric,
)
from transferbench.study import runs
from transferbench.study.experiments import Experiment
from transferbench.study.params import Params

STABILITY_TOLERANCE = 0.02
FIGURES = "figures"  # reports/figures/<experiment>-curves.png, -confusion.png
STABILITY_DEFINITION = (
    "the first epoch from which validation accuracy never again falls more than "
    f"{STABILITY_TOLERANCE} below the run's best validation accuracy"
)
HISTORY_COLUMNS = ("epoch", "accuracy", "val_accuracy", "loss", "val_loss")
# Loss may legitimately be NaN (a diverged epoch); accuracies and epochs never are.
NO_NAN_COLUMNS = ("epoch", "accuracy", "val_accuracy", "seconds")
# Cumulative training seconds at each epoch's end; runs recorded before it was kept have epochs only.
OPTIONAL_HISTORY_COLUMNS = ("seconds",)
METRICS_KEYS = ("test.accuracy", "test.loss", "best_val_accuracy", "epochs", "seconds")
PREDICTION_ARRAYS = ("target", "predicted")


class ReportError(BadInput):
    """An input file is missing a column or key, or holds a value that is not a number."""


def epochs_to_stability(epochs: Sequence[int], val_accuracy: Sequence[float],
                        tolerance: float = STABILITY_TOLERANCE) -> int | None:
    """The first epoch from which validation accuracy never again falls more than ``tolerance`` below the
    run's best validation accuracy; None when the last epoch is itself that far below (not stable yet:
    an overfitting run on a small validation set, say).

    Absolute, not relative, and measured from the best epoch (the checkpoint the run keeps), so a run that
    dips late is not called stable early; 0.02 is well above the epoch-to-epoch sampling noise of the
    seeds' validation sets (binomial standard error ~0.004 at 95% on pets' 2,835 images) and below the
    gap the seed reports between the arms (0.023), so it separates "still moving" from "noise".
    """
    if len(epochs) != len(val_accuracy) or not epochs:
        raise ValueError(f"need one validation accuracy per epoch, got {len(epochs)} epochs and "
                         f"{len(val_accuracy)} values")
    floor = max(val_accuracy) - tolerance
    below = [i for i, value in enumerate(val_accuracy) if value < floor]
    if not below:
        return int(epochs[0])
    return int(epochs[below[-1] + 1]) if below[-1] + 1 < len(epochs) else None


# A run is labelled, and left out of epochs to stability, when its curve cannot say when it settled.
DID_NOT_LEARN, STILL_IMPROVING = "did not learn", "still improving"
CHANCE_MARGIN = (0.02, 2)  # (floor, binomial standard errors on the validation images) above chance
CHANCE_DEFINITION = (
    f"a run *did not learn* when its best validation accuracy is within max({CHANCE_MARGIN[0]}, {CHANCE_MARGIN[1]} "
    "binomial standard errors of chance accuracy on the validation images) of chance (1 / classes per output); "
    "a run is *still improving* when its best validation epoch is its last")


def chance_margin(chance: float, validation_images: int | None) -> float:
    """How far above chance a best validation accuracy must be to count as learning (the floor alone when
    params do not give the validation split's size)."""
    floor, errors = CHANCE_MARGIN
    if not validation_images:
        return floor
    return max(floor, errors * math.sqrt(chance * (1 - chance) / validation_images))


def curve_label(run: Run, chance: float, margin: float) -> str | None:
    """DID_NOT_LEARN, STILL_IMPROVING or None (the curve peaked before its end, above chance)."""
    if run.best_val_accuracy <= chance + margin:
        return DID_NOT_LEARN
    if run.best_epoch >= int(run.history["epoch"].iloc[-1]):
        return STILL_IMPROVING
    return None


# ---- reading ------------------------------------------------------------------------------------

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
    missing: list[dict] = field(default_factory=list)  # {"run", "reason"}
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
        found.missing.append({"run": run_name, "reason": f"{reason} in {folder.relative_to(reports_root)}"})
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


# ---- numbers ------------------------------------------------------------------------------------

def pretrained_arm(settings: Mapping[str, str]) -> str | None:
    """The arm the overall table sets against random initialisation: the experiment's own recipe from ImageNet
    (``imagenet``, whatever its setting) if planned, else the first fine-tuned arm, else the first pretrained one."""
    others = [a for a in settings if a != RANDOM]
    tuned = [a for a in others if settings[a] == FINE_TUNED]
    if "imagenet" in others:
        return "imagenet"
    return (tuned or others)[0] if others else None


def missing_arm_reason(experiment: ExperimentRuns, which: str) -> str | None:
    """Why the experiment has no pretrained (or no random) result; None when it has one."""
    if which == "pretrained":
        arm = pretrained_arm(experiment.settings)
    else:
        arm = RANDOM if RANDOM in experiment.arms else None
    if arm is None:
        if which == "random":
            return "params.yaml trains only pretrained weights for this experiment (weights: none is not listed)"
        why = "" if has_imagenet(experiment.model) else f" ({experiment.model} has no ImageNet weights in Keras)"
        return f"params.yaml trains {experiment.model} from random initialisation only{why}"
    if not experiment.by_arm(arm):
        return f"every {arm} run is missing (listed below)"
    return None


def has_imagenet(model: str) -> bool:
    from transferbench.models.backbones import MODELS  # imports Keras: only asked for single-arm experiments

    try:
        return MODELS.get(model).imagenet is not None
    except ConfigError:
        return False


def stability_stat(arm_runs: Sequence[Run]) -> dict:
    """Epochs to stability over the runs that stabilised, and how many did not, are still improving or did
    not learn (their mean would be a guess)."""
    counted = [r for r in arm_runs if r.label is None]
    stable = [float(r.stability) for r in counted if r.stability is not None]
    stat = mean_interval(stable, BOUNDS["epochs_to_stability"]) if stable else {
        "mean": None, "std": None, "n": 0, "low": None, "high": None}
    return {**stat, "not_stable": len(counted) - len(stable),
            "still_improving": sum(r.label == STILL_IMPROVING for r in arm_runs),
            "did_not_learn": sum(r.label == DID_NOT_LEARN for r in arm_runs)}


ACCURACY, POSITIVE = (0.0, 1.0), (0.0, None)
# Each number's valid range: its interval is clipped to it.
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    **dict.fromkeys(("test_accuracy", "test_balanced_accuracy", "test_sequence_accuracy", "best_val_accuracy",
                     "last_val_accuracy", "last_train_accuracy"), ACCURACY),
    **dict.fromkeys(("test_loss", "best_epoch", "epochs_to_stability", "epochs", "seconds"), POSITIVE),
}


def arm_results(experiment: ExperimentRuns, arm: str, fraction: float | None = None) -> dict:
    """Mean and interval over seeds of every per-run number of one arm (at one share, default the main)."""
    arm_runs = experiment.by_arm(arm, fraction)
    entry: dict[str, Any] = {"runs": [r.name for r in arm_runs], "n": len(arm_runs),
                             "seeds": [r.seed for r in arm_runs], "setting": experiment.setting(arm),
                             "loss_definition": sorted({str(r.metrics["loss_definition"]) for r in arm_runs
                                                        if "loss_definition" in r.metrics})}
    if arm_runs:
        per_run = [r.values() for r in arm_runs]
        for key in dict.fromkeys(k for v in per_run for k in v):
            entry[key] = mean_interval([v[key] for v in per_run if key in v], BOUNDS.get(key, (None, None)))
        entry["epochs_to_stability"] = stability_stat(arm_runs)
        entry["best_phase"] = sorted({str(r.metrics["best_phase"]) for r in arm_runs if "best_phase" in r.metrics})
        entry["labels"] = {r.name: r.label for r in arm_runs if r.label}
    return entry


def summarise(experiment: ExperimentRuns) -> dict:
    """Per arm: mean/std/n of every number; pretrained minus random; missing runs; the seed's figures."""
    results = {arm: arm_results(experiment, arm) for arm in experiment.arms}
    comparisons = {arm: comparison(experiment, arm) for arm in experiment.arms if arm != RANDOM}
    differences = {}
    for arm in experiment.arms:
        if arm != RANDOM and results[arm]["n"] and RANDOM in results and results[RANDOM]["n"]:
            differences[f"{arm} - {RANDOM}"] = {
                key: results[arm][key]["mean"] - results[RANDOM][key]["mean"]
                for key in results[arm] if isinstance(results[arm][key], dict) and key in results[RANDOM]
                and results[arm][key].get("mean") is not None and results[RANDOM][key].get("mean") is not None}
    published = PUBLISHED.get(experiment.name)
    # A params override (`-S experiments.captcha.model=cnn`) keeps the name but not the seed's recipe.
    not_comparable = published.differs(experiment.dataset, experiment.model) if published else None
    if not_comparable:
        published = None
    published_figures = [] if published is None else [
        {"weights": f.weights, "metric": f.metric, "values": list(f.values), "note": f.note,
         "ours": results.get(f.weights, {}).get(f.metric)} for f in published.figures]
    return {
        "dataset": experiment.dataset,
        "model": experiment.model,
        "arms": experiment.arms,
        "settings": experiment.settings,
        "planned_seeds": experiment.seeds,
        "train_fractions": experiment.fractions,
        "main_fraction": experiment.main_fraction,
        "task": {"n_classes": experiment.n_classes, "n_outputs": experiment.n_outputs, "chance": experiment.chance,
                 "chance_margin": experiment.margin, "validation_images": experiment.validation_images,
                 "class_weight": experiment.class_weight, "captcha": experiment.captcha},
        "verdict_metric": experiment.verdict_metric,
        "pretrained_arm": pretrained_arm(experiment.settings),
        "results": results,
        "difference": differences,
        "no_result": {which: reason for which in ("pretrained", "random")
                      if (reason := missing_arm_reason(experiment, which))},
        "missing": experiment.missing,
        "ignored_run_folders": experiment.ignored,
        "published_not_comparable": not_comparable,
        "published": None if published is None else {
            "source": published.source, "recipe": published.recipe, "figures": published_figures},
        "comparisons": comparisons,
        "time_to_accuracy": time_to_accuracy(
            {arm: mean_curve(experiment.by_arm(arm)) for arm in experiment.arms if experiment.by_arm(arm)},
            published_figures, published.source if published else None,
            {arm: results[arm]["best_val_accuracy"]["mean"] for arm in experiment.arms if results[arm]["n"]}),
        "per_class": per_class(experiment),
        "budget": {arm: arm_budget(experiment.plan[arm], [r.metrics for r in experiment.by_arm(arm)],
                                   [r.seed for r in experiment.by_arm(arm)]) for arm in experiment.arms},
        "data_size": data_size_rows(experiment, comparisons),
    }


def comparison(experiment: ExperimentRuns, arm: str, fraction: float | None = None, also: bool = True) -> dict:
    """``arm`` against random initialisation on the verdict metric (points), with a paired interval over
    seeds and test images; with ``also``, the other metrics' intervals under ``also``."""
    mine, random = experiment.by_arm(arm, fraction), experiment.by_arm(RANDOM, fraction)
    out: dict[str, Any] = {"setting": experiment.setting(arm), "against": RANDOM}
    if not mine or not random:
        absent = arm if not mine else RANDOM
        why = "not planned in params.yaml" if absent not in experiment.arms else "every run is missing"
        return {**out, "metric": experiment.verdict_metric, "no_result": f"no {absent} run ({why})"}
    both = [*mine, *random]
    lacking = [r.name for r in both if r.predictions is None]
    metrics = interval_metrics(experiment.verdict_metric, experiment.n_outputs)[:None if also else 1]
    means = {m: (arm_mean(mine, m), arm_mean(random, m)) for m in metrics}
    target = None if lacking else both[0].predictions[0]  # type: ignore[index]
    result = compare(target, [r.predictions[1] for r in mine if r.predictions is not None],
                     [r.predictions[1] for r in random if r.predictions is not None], metrics, means)
    return {**out, **result, **({"no_predictions": lacking} if lacking else {})}


def arm_mean(arm_runs: Sequence[Run], metric: str) -> float:
    """The runs' mean test ``metric`` (nan where a run does not have it)."""
    values = [r.values().get(RESULT_KEYS[metric], math.nan) for r in arm_runs]
    return float(np.mean(values))


def data_size_rows(experiment: ExperimentRuns, main: Mapping[str, dict]) -> list[dict]:
    """Per share of the training split: each arm's verdict metric over seeds, and each pretrained arm minus
    random with its two-level interval (descriptive: no verdict, not in the Holm family); ``main``: the
    main share's comparisons, already made."""
    key = RESULT_KEYS[experiment.verdict_metric]
    rows = []
    for fraction in experiment.fractions:
        arms = {}
        for arm in experiment.arms:
            result = arm_results(experiment, arm, fraction)
            images = distinct(r.metrics.get("train_images") for r in experiment.by_arm(arm, fraction))
            arms[arm] = {"n": result["n"], "metric": result.get(key), "train_images": images,
                         "setting": result["setting"]}
        versus = main if fraction == experiment.main_fraction else {
            arm: comparison(experiment, arm, fraction, also=False) for arm in experiment.arms if arm != RANDOM}
        rows.append({"train_fraction": fraction, "arms": arms, "comparisons": versus})
    return rows


def mean_curve(arm_runs: Sequence[Run]) -> pd.DataFrame:
    """Validation accuracy per epoch averaged over the runs (and cumulative seconds, when every run has them)."""
    columns = ["epoch", "val_accuracy"] + (["seconds"] if all("seconds" in r.history for r in arm_runs) else [])
    joined = pd.concat([r.history[columns] for r in arm_runs], ignore_index=True)
    return joined.groupby("epoch", as_index=False).mean().sort_values("epoch")


def per_class(experiment: ExperimentRuns) -> dict | None:
    """Per arm, each class's (CAPTCHA: each position's) test accuracy averaged over seeds; None if none known."""
    arms: dict[str, dict[str, float]] = {}
    kind = "class"
    for arm in experiment.arms:
        tables = []
        for run in experiment.by_arm(arm):
            test = run.metrics["test"]
            if "position_accuracy" in test:
                kind = "position"
                tables.append(test["position_accuracy"])
            elif "per_class_accuracy" in run.metrics:
                tables.append(run.metrics["per_class_accuracy"])
            elif run.confusion is not None:  # runs evaluated before per-class accuracy was kept
                counts = run.confusion.to_numpy(dtype=float)
                tables.append(dict(zip(run.confusion.index, np.diag(counts) / np.maximum(counts.sum(axis=1), 1),
                                       strict=True)))
        if tables:
            names = list(dict.fromkeys(k for t in tables for k in t))
            arms[arm] = {k: float(np.mean([t[k] for t in tables if k in t])) for k in names}
    return {"kind": kind, "arms": arms} if arms else None


def references(summary: Mapping[str, Any]) -> dict[str, float]:
    """The seed's published accuracies a validation curve can be held against, labelled for a figure legend."""
    published = summary["published"]
    if not published:
        return {}
    return {f"{published['source']} {f['weights']} {PUBLISHED_METRICS[f['metric']]}": float(np.mean(f["values"]))
            for f in published["figures"] if f["metric"] in COMPARABLE_METRICS}


def curves_frame(experiment: ExperimentRuns) -> pd.DataFrame:
    """Long format: experiment, weights, seed, split (train, validation), epoch, accuracy, loss."""
    frames = []
    for run in experiment.runs:
        h = run.history
        for split, acc, loss in (("train", "accuracy", "loss"), ("validation", "val_accuracy", "val_loss")):
            frames.append(pd.DataFrame({"experiment": experiment.name, "weights": run.weights, "seed": run.seed,
                                        "split": split, "epoch": h["epoch"], "accuracy": h[acc], "loss": h[loss]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({
        "experiment": [], "weights": [], "seed": pd.Series(dtype=int), "split": [],
        "epoch": pd.Series(dtype=int), "accuracy": pd.Series(dtype=float), "loss": pd.Series(dtype=float)})


def summed_confusion(experiment: ExperimentRuns) -> dict[str, pd.DataFrame]:
    """Per arm, the confusion counts summed over its seeds (arms without any matrix left out)."""
    out = {}
    for arm in experiment.arms:
        tables = [r.confusion for r in experiment.by_arm(arm) if r.confusion is not None]
        if tables:
            total = tables[0].copy()
            for table in tables[1:]:
                total = total.add(table, fill_value=0)
            out[arm] = total
    return out


# ---- README -------------------------------------------------------------------------------------

ROWS = (  # (summary key, label, kind); {n}: the CAPTCHA's characters
    ("test_accuracy", "test accuracy", "number"),
    ("test_balanced_accuracy", "test balanced accuracy (mean recall over classes)", "number"),
    ("test_sequence_accuracy", "test accuracy, whole CAPTCHA (all {n} characters right)", "number"),
    ("test_loss", "test loss", "number"),
    ("best_val_accuracy", "best validation accuracy (each run's maximum, mean over seeds)", "number"),
    ("best_epoch", "best validation epoch (the checkpoint tested)", "epochs"),
    ("last_val_accuracy", "validation accuracy, last epoch", "number"),
    ("last_train_accuracy", "train accuracy, last epoch", "number"),
    ("epochs_to_stability", "epochs to stability", "epochs"),
    ("epochs", "epochs trained", "epochs"),
    ("seconds", "training time (wall clock)", "seconds"),
)
KINDS = {key: kind for key, _, kind in ROWS}
FEW_SEEDS = "fewer than 3 seeds: the interval is wide and rough"


def verdicts(summary: Mapping[str, Any]) -> list[str]:
    """Per pretrained arm: the difference and its interval first, then the verdict; other metrics below."""
    lines, outputs = [], summary["task"]["n_outputs"]
    for arm, comparison in summary["comparisons"].items():
        if "no_result" in comparison:
            continue
        lines.append(f"- {arm_title(arm, comparison['setting'])} − {arm_title(RANDOM)}, "
                     f"{metric_title(comparison['metric'], outputs)}: {fmt_difference(comparison)} points; "
                     f"helped: {helped(comparison)}")
        for metric, other in comparison.get("also", {}).items():
            lines.append(f"  - {metric_title(metric, outputs)}: {fmt_difference(other)} points")
    return lines


def few_seeds(summary: Mapping[str, Any]) -> list[str]:
    """The arms with 2 seeds, whose t and bootstrap intervals rest on too little."""
    return [a for a in summary["arms"] if 1 < summary["results"][a]["n"] < 3]


def labels_cell(result: Mapping[str, Any]) -> str:
    """e.g. ``1 still improving, 1 did not learn`` (left out of epochs to stability), or ``none``."""
    labels = list(result.get("labels", {}).values())
    return ", ".join(f"{labels.count(label)} {label}" for label in (STILL_IMPROVING, DID_NOT_LEARN)
                     if label in labels) or "none"


def result_rows(summary: Mapping[str, Any], has_diff: bool) -> list[list[str]]:
    """The per-experiment table's rows: every number per arm (and the difference), then phases and labels."""
    results, arms = summary["results"], summary["arms"]
    diff = summary["difference"].get(f"{summary['pretrained_arm']} - {RANDOM}", {})
    multihead = summary["task"]["n_outputs"] > 1
    rows = []
    for key, label, kind in ROWS:
        if not any(key in results[a] for a in arms):
            continue
        if key == "test_accuracy" and multihead:
            label = "test accuracy, per character"
        cells = [fmt_stat(results[a].get(key), kind) for a in arms]
        if has_diff:
            cells.append("—" if diff.get(key) is None else fmt_value(diff[key], kind, signed=True))
        rows.append([label.format(n=summary["task"]["n_outputs"]), *cells])
    extra = [("phase of the best epoch", lambda r: ", ".join(r.get("best_phase", [])) or "not recorded"),
             ("curve labels (not in epochs to stability)", labels_cell),
             ("runs", lambda r: f"{r['n']} (seeds {', '.join(map(str, r['seeds'])) or '—'})")]
    for label, cell in extra:
        rows.append([label, *(cell(results[a]) if results[a]["n"] else "—" for a in arms), *([""] if has_diff else [])])
    return rows


def published_row(figure: Mapping[str, Any], settings: Mapping[str, str]) -> list[str]:
    """A reference study's figure beside ours: metric, arm, published value(s), our mean ± std, note."""
    kind = KINDS.get(figure["metric"], "number")
    return [PUBLISHED_METRICS[figure["metric"]], arm_title(figure["weights"], settings.get(figure["weights"])),
            " and ".join(fmt_value(v, kind) for v in figure["values"]),
            fmt_stat(figure["ours"], kind) if figure["ours"] else "no run", figure["note"]]


def experiment_section(name: str, summary: Mapping[str, Any], figures: Mapping[str, str]) -> list[str]:
    results, arms, settings = summary["results"], summary["arms"], summary["settings"]
    pretrained = summary["pretrained_arm"]
    has_diff = f"{pretrained} - {RANDOM}" in summary["difference"]
    lines = [f"## {name}", "", f"Dataset `{summary['dataset']}`{captcha_words(summary['task'])}, model "
             f"`{summary['model']}`; arms {', '.join(f'`{a}`' for a in arms)}; seeds "
             f"{', '.join(map(str, summary['planned_seeds']))}.", ""]
    for which, reason in summary["no_result"].items():
        lines += [f"**No {which} run:** {reason}.", ""]
    if verdicts(summary):
        lines += ["**Pretrained minus random** (points; 95% interval resampling each arm's seeds, then the test "
                  "images, paired; Holm-adjusted p over every verdict of this report):", "", *verdicts(summary), ""]
    if few_seeds(summary):
        lines += [f"**Note:** {FEW_SEEDS} ({', '.join(f'`{a}`' for a in few_seeds(summary))}).", ""]
    if any(results[a]["n"] for a in arms):
        header = ["", *(arm_title(a, settings[a]) for a in arms),
                  *([f"difference ({pretrained} − {RANDOM})"] if has_diff else [])]
        lines += [*markdown_table(header, result_rows(summary, has_diff)), ""]
    lines += ["**What each arm was given:**", "", *budget_table(summary["budget"]), ""]
    lines += data_size_lines(name, summary, figures)
    definitions = {a: results[a]["loss_definition"] for a in arms if results[a].get("loss_definition")}
    if definitions:
        lines += ["**Loss**, as each arm's runs define it (losses defined differently do not compare):", "",
                  *(f"- {arm_title(a, settings[a])}: {'; '.join(d)}" for a, d in definitions.items()), ""]
    published = summary["published"]
    if summary.get("published_not_comparable"):
        lines += [f"The seed's figures are not shown: {summary['published_not_comparable']}.", ""]
    if published:
        lines += [f"Published by {published['source']} ({published['recipe']}), beside ours for the same metric:", "",
                  *markdown_table(["seed's figure", "arm", "published", "ours", "note"],
                                  (published_row(f, settings) for f in published["figures"])), ""]
    if any(summary["time_to_accuracy"].values()):
        lines += ["**Time to accuracy**: the first epoch at which an arm's validation accuracy (mean over its "
                  "seeds) reaches the target; seconds are cumulative training time.", "",
                  *time_table(summary["time_to_accuracy"], settings), ""]
    if summary["per_class"]:
        what = "per character position" if summary["per_class"]["kind"] == "position" else "per class"
        lines += [f"**Test accuracy {what}** (mean over seeds):", "",
                  *per_class_table(summary["per_class"], settings), ""]
    for label, path in figures.items():
        if label != DATA_SIZE_FIGURE:
            lines += [f"![{name}: {label}]({path})", ""]
    if summary["missing"]:
        lines += [f"Missing runs ({len(summary['missing'])}): " +
                  "; ".join(f"`{m['run']}` ({m['reason']})" for m in summary["missing"]) + ".", ""]
    if summary["ignored_run_folders"]:
        lines += ["Run folders not planned by params.yaml, left out: " +
                  ", ".join(f"`{r}`" for r in summary["ignored_run_folders"]) + ".", ""]
    return lines


def captcha_length(definitions: Mapping[str, Any]) -> str:
    """The CAPTCHA's characters as params give them, for the README's words ("all 6 characters")."""
    captcha = definitions.get("captcha")
    return str(captcha["length"]) if captcha else "its"


def captcha_words(task: Mapping[str, Any]) -> str:
    """`` (CAPTCHAs of 6 characters, style `seed000`)`` for a CAPTCHA experiment; empty otherwise."""
    captcha = task.get("captcha")
    return f" (CAPTCHAs of {captcha['length']} characters, style `{captcha['style']}`)" if captcha else ""


def overall_rows(summaries: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """One row per experiment: pretrained and random test accuracy, loss, stability, and the differences."""
    rows = []
    for name, s in summaries.items():
        pretrained = s["pretrained_arm"]
        row: dict[str, Any] = {"experiment": name, "dataset": s["dataset"], "model": s["model"],
                               "pretrained_arm": pretrained}
        for which, arm in (("pretrained", pretrained), ("random", RANDOM)):
            result = s["results"].get(arm) if arm else None
            if result and result["n"]:
                row[which] = {key: result[key] for key in ("test_accuracy", "test_sequence_accuracy", "test_loss",
                                                           "epochs_to_stability", "seconds", "n") if key in result}
            else:
                row[which] = {"n": 0, "no_result": s["no_result"].get(which, "no run")}
        row["difference"] = {k: v for k, v in s["difference"].get(f"{pretrained} - {RANDOM}", {}).items()
                             if k in ("test_accuracy", "test_sequence_accuracy", "test_loss", "epochs_to_stability",
                                      "seconds")}
        rows.append(row)
    return rows


def overall_table(summaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    def difference(d: Mapping[str, float]) -> str:
        if "test_accuracy" not in d:
            return "—"
        text = fmt_value(d["test_accuracy"], "number", signed=True)
        if "test_sequence_accuracy" in d:
            text += f" per character, {fmt_value(d['test_sequence_accuracy'], 'number', signed=True)} whole"
        return text

    header = ["experiment", "dataset, model", "test accuracy: pretrained", "random", "difference",
              "test loss: pretrained / random", "epochs to stability: pretrained / random",
              "training time: pretrained / random", "runs", "seed's figure"]
    cells = []
    for row in overall_rows(summaries):
        name, s = row["experiment"], summaries[row["experiment"]]
        p, r, d = row["pretrained"], row["random"], row["difference"]

        def cell(side: Mapping[str, Any], key: str) -> str:
            if key not in side:
                return "no run"
            if key == "test_accuracy" and "test_sequence_accuracy" in side:
                return (f"{fmt_stat(side[key], 'number')} per character, "
                        f"{fmt_stat(side['test_sequence_accuracy'], 'number')} whole CAPTCHA")
            return fmt_stat(side[key], KINDS[key])

        published = s["published"]
        headline = "—"
        if published:
            first: dict[str, Mapping[str, Any]] = {}  # arm -> its first published figure
            for f in published["figures"]:
                first.setdefault(f["weights"], f)
            headline = "; ".join(f"{'pretrained' if w != RANDOM else 'random'} {PUBLISHED_METRICS[f['metric']]} "
                                 f"{' / '.join(fmt_value(v, 'number') for v in f['values'])}"
                                 for w, f in first.items()) + f" ({published['source']})"
        cells.append([f"[{name}](#{name.lower()})", f"{s['dataset']}, {s['model']}", cell(p, "test_accuracy"),
                      cell(r, "test_accuracy"), difference(d),
                      f"{cell(p, 'test_loss')} / {cell(r, 'test_loss')}",
                      f"{cell(p, 'epochs_to_stability')} / {cell(r, 'epochs_to_stability')}",
                      f"{cell(p, 'seconds')} / {cell(r, 'seconds')}", f"{p.get('n', 0)} / {r.get('n', 0)}", headline])
    return markdown_table(header, cells)


def readme(summaries: Mapping[str, Mapping[str, Any]], figures: Mapping[str, Mapping[str, str]],
           definitions: Mapping[str, Any] | None = None) -> str:
    """reports/README.md from the summaries (pure: the same summaries give the same text)."""
    missing = [(name, m) for name, s in summaries.items() for m in s["missing"]]
    definitions = definitions or {}
    characters = captcha_length(definitions)
    lines = [
        "# Results: how much do ImageNet-pretrained weights help?",
        "",
        "Written by `python -m stages.report` (DVC stage `report`) from every run under "
        "`reports/runs/<experiment>/`; do not edit by hand. The same numbers are in `summary.json`; "
        "`dvc plots show` draws `curves.csv` and `data_size.csv`; `mlflow ui` in the repository root shows "
        "every run.",
        "",
        "## The answer",
        "",
        *answer_table(summaries),
        "",
        *([definitions["budget_rule"], ""] if "budget_rule" in definitions else []),
        "Each pretrained arm is one setting (Kornblith, Shlens & Le 2019): *fine-tuned* trains the pretrained "
        "base with its head, *fixed features* freezes the base under a linear or SVM head; *random init* trains "
        "the same model from random weights. Each verdict names its test metric: balanced accuracy (mean recall "
        "over the test set's classes) for an experiment trained with balanced class weights, else accuracy "
        "(per character for CAPTCHAs). Arm columns are the mean over training seeds with a 95% t interval "
        f"(one seed: no interval; {FEW_SEEDS}). The difference comes first, in percentage points, with a 95% "
        f"interval from {BOOTSTRAP_RESAMPLES:,} resamples (fixed random state {BOOTSTRAP_SEED}) that each draw "
        "every arm's seeds with replacement, average their per-image correctness, then draw the test images "
        "with replacement, the same for both arms: it counts training chance and the test set's sampling. "
        "Pretraining *helped* (yes) when the Holm-adjusted p-value is below 0.05 and the interval lies above 0; "
        f"the Holm family is {FAMILY}. With one seed in an arm there is no verdict, only the interval over test "
        "images, labelled so. The reference studies' figures are each labelled with the metric they measured.",
        "",
        "## Overall",
        "",
        *overall_table(summaries),
        "",
        "**How to read it.** Numbers are the mean over training seeds and its 95% t interval in brackets "
        "(none with one seed); *difference* is the pretrained mean minus the random-initialisation mean. "
        "*Test accuracy* is on the held-out test split; for CAPTCHAs it is per "
        f"character (the figure seed 000 most likely published), and the experiment's table adds whole-CAPTCHA "
        f"accuracy (all {characters} characters right). *Test loss* is Keras' total loss (for CAPTCHAs the sum "
        f"over the {characters} heads). *Best validation accuracy* is each run's maximum over its epochs (the "
        "checkpoint that is tested), averaged over seeds, everywhere in this report. "
        f"*Epochs to stability* is {STABILITY_DEFINITION} "
        "(`transferbench.reporting.report.epochs_to_stability`), per run, then "
        "averaged over the seeds whose runs stabilised; a run whose last epoch is still further below its best "
        f"is *not stable* and counted beside the mean, not in it; so is every run labelled: {CHANCE_DEFINITION}. "
        "Intervals are clipped to their valid range ([0, 1] for accuracies, 0 or more for losses, epochs and "
        "seconds). The tolerance is absolute: well above the "
        "epoch-to-epoch sampling noise of "
        "the validation sets (binomial standard error about 0.004 at 95% accuracy on pets' 2,835 images) "
        "and below the gap seed 000 reports between its arms (0.023). Seed 000's 8 and 17 epochs were read "
        "off its curves by eye, so they compare only roughly. *Training time* is the training stage's wall "
        "clock (hardware dependent). The seeds' figures are not all the same metric: each is labelled.",
        "",
    ]
    if missing:
        lines += [f"**Missing runs ({len(missing)})**, planned by params.yaml but not found; they are left out of "
                  "every number above:", "",
                  *markdown_table(["experiment", "run", "reason"], ([name, f"`{m['run']}`", m["reason"]]
                                                                   for name, m in missing)), ""]
    for name, summary in summaries.items():
        lines += experiment_section(name, summary, figures.get(name, {}))
    return "\n".join(lines).rstrip("\n") + "\n"


# ---- the stage ----------------------------------------------------------------------------------

def rounded(value: Any, digits: int = 6) -> Any:
    """Floats rounded for summary.json, so float noise in the last bits cannot change its bytes."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, Mapping):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


@dataclass
class Report:
    experiments: list[ExperimentRuns]
    summary: dict
    figures: dict[str, dict[str, Path]]  # experiment -> {label: png}


def build(params: Params, reports_root: Path) -> Report:
    """Read the runs under ``reports_root`` and write README.md, summary.json, curves.csv, data_size.csv and
    the PNGs there."""
    experiments = collect(params, reports_root)
    summaries = {experiment.name: summarise(experiment) for experiment in experiments}
    family = apply_holm(c for s in summaries.values() for c in s["comparisons"].values())
    sizes = data_size.frame(summaries)
    figures = {experiment.name: draw(experiment, summaries[experiment.name], sizes, reports_root)
               for experiment in experiments}
    links = {name: {label: path.relative_to(reports_root).as_posix() for label, path in figs.items()}
             for name, figs in figures.items()}
    summary = rounded({
        "definitions": definitions(params, family),
        "overall": overall_rows(summaries),
        "experiments": summaries,
        "missing": [{"experiment": name, **m} for name, s in summaries.items() for m in s["missing"]],
        "figures": links,
    })
    write_json(reports_root / "summary.json", summary)
    write_text(reports_root / "README.md", readme(summary["experiments"], links, summary["definitions"]))
    curves = [curves_frame(experiment) for experiment in experiments]
    # Empty frames (experiments without runs) would turn the number columns into objects.
    table = pd.concat([c for c in curves if not c.empty] or curves[:1], ignore_index=True)
    write_text(reports_root / "curves.csv", table.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    write_text(reports_root / "data_size.csv", data_size.to_csv(sizes))
    return Report(experiments, summary, figures)


def definitions(params: Params, family: int) -> dict:
    """What the report's words mean, for summary.json and the README."""
    captcha = getattr(params, "captcha", None)
    return {
        "epochs_to_stability": STABILITY_DEFINITION,
        "stability_tolerance": STABILITY_TOLERANCE,
        "curve_labels": CHANCE_DEFINITION,
        "chance_margin": {"floor": CHANCE_MARGIN[0], "standard_errors": CHANCE_MARGIN[1]},
        "std": "sample standard deviation over seeds (n - 1); null for one seed",
        "difference": "pretrained arm's mean minus random initialisation's (none) mean",
        "interval": "95% percentile interval of a bootstrap resampling each arm's seeds, then the test images "
                    "(paired)",
        "best_val_accuracy": "each run's maximum validation accuracy, averaged over seeds",
        "holm_family": FAMILY,
        "holm_family_size": family,
        "alpha": ALPHA,
        "tuning": params.tuning.model_dump(),
        "random_schedule": params.random_schedule,
        "budget_rule": budget_rule(params.tuning.model_dump(), params.random_schedule),
        "captcha": None if captcha is None else {"length": captcha.length, "style": getattr(captcha, "style", "plain")},
    }


def draw(experiment: ExperimentRuns, summary: Mapping[str, Any], sizes: pd.DataFrame,
         reports_root: Path) -> dict[str, Path]:
    """The experiment's figures: learning curves, confusion matrices, and the data-size figure (several shares)."""
    figures: dict[str, Path] = {}
    if experiment.runs:
        stability = {arm: s["epochs_to_stability"]["mean"] for arm, s in summary["results"].items()
                     if s["n"] and s["epochs_to_stability"]["mean"] is not None}
        out = reports_root / FIGURES / f"{experiment.name}-curves.png"
        comparison_curves(curves_frame(experiment), f"{experiment.name}: {experiment.model}, "
                          + " vs ".join(arm_title(a, experiment.setting(a)) for a in experiment.arms), out,
                          stability, references(summary))
        figures["learning curves"] = out
    matrices = summed_confusion(experiment)
    if matrices:
        out = reports_root / FIGURES / f"{experiment.name}-confusion.png"
        confusion_matrices({arm_title(a, experiment.setting(a)): m for a, m in matrices.items()},
                           f"{experiment.name}: test confusion matrices (summed over seeds)", out)
        figures["confusion matrices"] = out
    rows = sizes[sizes["experiment"] == experiment.name]
    if len(experiment.fractions) > 1 and rows["mean"].notna().any():
        out = reports_root / FIGURES / f"{experiment.name}-data-size.png"
        metric = METRIC_TITLES[experiment.verdict_metric]
        data_size_curves(rows, f"{experiment.name}: test {metric} across training-set sizes (95% over seeds)",
                         f"test {metric}", out)
        figures[DATA_SIZE_FIGURE] = out
    return figures


@contextlib.contextmanager
def env_defaults(**values: str) -> Iterator[None]:
    """Set environment variables the user has not set, for the block only."""
    added = [k for k in values if k not in os.environ]
    os.environ.update({k: values[k] for k in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def log_figures(report: Report) -> list[str]:
    """Log each experiment's figures to each of its runs in MLflow (under ``report/``); return warnings.

    Never raises: an unknown run id is skipped, an unreachable store stops the logging.
    """
    # A server that is down should cost seconds, not MLflow's default minutes of retries.
    with env_defaults(MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_TIMEOUT="20"), \
            tempfile.TemporaryDirectory() as tmp:
        return _log_figures(report, Path(tmp))


def _log_figures(report: Report, tmp: Path) -> list[str]:
    from mlflow.exceptions import MlflowException

    from transferbench.tracking import mlflow_runs as tracking

    def unreachable(err: Exception) -> str:
        return f"MLflow at {tracking.tracking_uri()} unreachable ({err}); figures not logged"

    warnings: list[str] = []
    try:
        client = tracking._client()
    except Exception as err:  # noqa: BLE001 - whatever the cause, there is no MLflow to log to
        return [unreachable(err)]
    for experiment in report.experiments:
        shared = report.figures.get(experiment.name, {}).get("learning curves")
        for run in experiment.all_runs:
            where = f"{experiment.name}/{run.name}"
            run_id = run.metrics.get("mlflow_run_id")
            if not run_id:
                warnings.append(f"{where}: no mlflow_run_id in metrics.json; figures not logged")
                continue
            try:
                client.get_run(run_id)
            except MlflowException as err:
                if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                    warnings.append(f"{where}: MLflow run {run_id} not found in {tracking.tracking_uri()}")
                    continue
                return warnings + [unreachable(err)]
            except Exception as err:  # noqa: BLE001
                return warnings + [unreachable(err)]
            files = [shared] if shared else []
            if run.confusion is not None:
                out = tmp / experiment.name / run.name / "confusion.png"
                confusion_matrices({run.name: run.confusion},
                                   f"{experiment.name} {run.name}: test confusion matrix", out)
                files.append(out)
            try:
                for file in files:
                    client.log_artifact(run_id, str(file), "report")
            except Exception as err:  # noqa: BLE001
                warnings.append(f"{where}: logging to MLflow run {run_id} failed ({err})")
    return warnings


def print_answer(summaries: Mapping[str, Mapping[str, Any]]) -> None:
    """The report's first table on stdout: it is the stage's output, not a log message."""
    print("\n".join(answer_table(summaries)))
