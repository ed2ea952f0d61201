"""Stage `report`: the project's answer, pretrained against random initialisation, per experiment.

Reads every run that params.yaml plans (transferbench.study.runs: arms x seeds) from reports/runs/<experiment>/<run>/
(history.csv, metrics.json, confusion.csv, predictions.npz) and writes:

- reports/README.md: the page to read first: the answer (per experiment and pretrained setting against
  random initialisation, with intervals: transferbench.reporting.answer), tables per experiment and overall,
  time to accuracy, per-class accuracy, the seeds' published figures beside ours, missing runs, figures;
- reports/summary.json: the same numbers as data (sorted keys, no timestamps);
- reports/curves.csv: every run's curves in long format, for `dvc plots` (template
  .dvc/plots/pretrained_vs_random.json: pretrained and random as separate lines);
- reports/figures/<experiment>-curves.png (and -confusion.png for single-output tasks): one folder,
  so dvc.yaml names it once whatever the experiments are.

Then it logs each experiment's figures to its runs in MLflow, under ``report/``; when MLflow is
unreachable or a run id is unknown it warns and goes on: the files are the product.
"""

from __future__ import annotations

import contextlib
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
from transferbench.plots import comparison_curves, confusion_matrices
from transferbench.reporting.answer import (
    COMPARABLE_METRICS,
    answer_table,
    compare,
    helped,
    per_class_table,
    time_table,
    time_to_accuracy,
)
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
from transferbench.reporting.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, mean_interval
from transferbench.study import runs
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

    name: str  # e.g. imagenet-s42
    weights: str
    seed: int
    history: pd.DataFrame
    metrics: dict
    confusion: pd.DataFrame | None
    predictions: tuple[np.ndarray, np.ndarray] | None = None  # target, predicted (test-manifest order)
    predictions_file: Path | None = None

    @property
    def setting(self) -> str:
        return str(self.metrics.get("setting") or setting_of(self.weights))

    @property
    def stability(self) -> int | None:
        return epochs_to_stability(self.history["epoch"].tolist(), self.history["val_accuracy"].tolist())

    def values(self) -> dict[str, float]:
        """Every per-run number the report aggregates over seeds."""
        test = self.metrics["test"]
        out = {
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "best_val_accuracy": self.metrics["best_val_accuracy"],
            "last_val_accuracy": float(self.history["val_accuracy"].iloc[-1]),
            "last_train_accuracy": float(self.history["accuracy"].iloc[-1]),
            "epochs_to_stability": self.stability,
            "epochs": self.metrics["epochs"],
            "seconds": self.metrics["seconds"],
        }
        if "sequence_accuracy" in test:
            out["test_sequence_accuracy"] = test["sequence_accuracy"]
        # A run that never stabilised has no epochs to stability; summarise counts it instead.
        return {k: float(v) for k, v in out.items() if v is not None}


@dataclass
class ExperimentRuns:
    """What params plan for one experiment and what was found of it."""

    name: str
    dataset: str
    model: str
    arms: list[str]  # weights labels, in params order
    seeds: list[int]
    runs: list[Run] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)  # {"run", "reason"}
    ignored: list[str] = field(default_factory=list)  # run folders params do not plan
    planned_settings: dict[str, str] = field(default_factory=dict)  # arm -> setting, as params plan it

    def by_arm(self, arm: str) -> list[Run]:
        return [r for r in self.runs if r.weights == arm]

    def setting(self, arm: str) -> str:
        """What the arm's runs recorded, else what params plan, else what its label says."""
        recorded = [r.metrics["setting"] for r in self.by_arm(arm) if r.metrics.get("setting")]
        return recorded[0] if recorded else self.planned_settings.get(arm) or setting_of(arm)

    @property
    def settings(self) -> dict[str, str]:
        return {arm: self.setting(arm) for arm in self.arms}


def collect(params: Params, reports_root: Path) -> list[ExperimentRuns]:
    """Read every planned run of every experiment; absent runs are recorded as missing, with why."""
    collected = []
    for name, settings in params.experiments.items():
        planned = runs.runs(params, name)
        found = ExperimentRuns(name=name, dataset=settings.dataset, model=settings.model,
                               arms=list(dict.fromkeys(e.weights_label for e in planned)),
                               seeds=sorted({e.seed for e in planned}),
                               planned_settings={e.weights_label: e.setting for e in planned})
        runs_dir = reports_root / "runs" / name
        for experiment in planned:
            run_name = runs.run_name(experiment)
            folder = reports_root / runs.report_dir(experiment).relative_to(paths.REPORTS)
            absent = [f for f in ("metrics.json", "history.csv") if not (folder / f).is_file()]
            if not folder.is_dir() or absent:
                reason = "no run folder" if not folder.is_dir() else f"no {' or '.join(absent)}"
                found.missing.append({"run": run_name, "reason": f"{reason} in {folder.relative_to(reports_root)}"})
                continue
            confusion, predictions = folder / "confusion.csv", folder / "predictions.npz"
            found.runs.append(Run(
                name=run_name, weights=experiment.weights_label, seed=experiment.seed,
                history=read_history(folder / "history.csv"), metrics=read_metrics(folder / "metrics.json"),
                confusion=read_confusion(confusion) if confusion.is_file() else None,
                predictions=read_predictions(predictions) if predictions.is_file() else None,
                predictions_file=predictions if predictions.is_file() else None))
        same_test_set(found.runs)
        planned_names = {runs.run_name(e) for e in planned}
        if runs_dir.is_dir():
            found.ignored = sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and p.name not in planned_names)
        collected.append(found)
    return collected


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
    """Epochs to stability over the runs that stabilised, and how many did not (their mean would be a guess)."""
    stable = [float(r.stability) for r in arm_runs if r.stability is not None]
    stat = mean_interval(stable) if stable else {"mean": None, "std": None, "n": 0, "low": None, "high": None}
    return {**stat, "not_stable": len(arm_runs) - len(stable)}


def summarise(experiment: ExperimentRuns) -> dict:
    """Per arm: mean/std/n of every number; pretrained minus random; missing runs; the seed's figures."""
    results = {}
    for arm in experiment.arms:
        arm_runs = experiment.by_arm(arm)
        entry: dict[str, Any] = {"runs": [r.name for r in arm_runs], "n": len(arm_runs),
                                 "seeds": [r.seed for r in arm_runs],
                                 "setting": experiment.setting(arm),
                                 "loss_definition": sorted({str(r.metrics["loss_definition"]) for r in arm_runs
                                                            if "loss_definition" in r.metrics})}
        if arm_runs:
            per_run = [r.values() for r in arm_runs]
            for key in dict.fromkeys(k for v in per_run for k in v):
                entry[key] = mean_interval([v[key] for v in per_run if key in v])
            entry["epochs_to_stability"] = stability_stat(arm_runs)
        results[arm] = entry
    pretrained = pretrained_arm(experiment.settings)
    differences = {}
    for arm in experiment.arms:
        if arm != RANDOM and results[arm]["n"] and RANDOM in results and results[RANDOM]["n"]:
            differences[f"{arm} - {RANDOM}"] = {
                key: results[arm][key]["mean"] - results[RANDOM][key]["mean"]
                for key in results[arm] if isinstance(results[arm][key], dict) and key in results[RANDOM]
                and results[arm][key]["mean"] is not None and results[RANDOM][key]["mean"] is not None}
    published = PUBLISHED.get(experiment.name)
    # A params override (`-S experiments.captcha.model=cnn`) keeps the name but not the seed's recipe.
    not_comparable = published.differs(experiment.dataset, experiment.model) if published else None
    if not_comparable:
        published = None
    published_figures = [] if published is None else [
        {"weights": f.weights, "metric": f.metric, "values": list(f.values), "note": f.note,
         "ours": results.get(f.weights, {}).get(f.metric)} for f in published.figures]
    summary = {
        "dataset": experiment.dataset,
        "model": experiment.model,
        "arms": experiment.arms,
        "settings": experiment.settings,
        "planned_seeds": experiment.seeds,
        "pretrained_arm": pretrained,
        "results": results,
        "difference": differences,
        "no_result": {which: reason for which in ("pretrained", "random")
                      if (reason := missing_arm_reason(experiment, which))},
        "missing": experiment.missing,
        "ignored_run_folders": experiment.ignored,
        "published_not_comparable": not_comparable,
        "published": None if published is None else {
            "source": published.source, "recipe": published.recipe, "figures": published_figures},
        "comparisons": {arm: comparison(experiment, arm) for arm in experiment.arms if arm != RANDOM},
        "time_to_accuracy": time_to_accuracy(
            {arm: mean_curve(experiment.by_arm(arm)) for arm in experiment.arms if experiment.by_arm(arm)},
            published_figures, published.source if published else None),
        "per_class": per_class(experiment),
    }
    return summary


def comparison(experiment: ExperimentRuns, arm: str) -> dict:
    """``arm`` against random initialisation on test accuracy (points), with a paired bootstrap interval."""
    mine, random = experiment.by_arm(arm), experiment.by_arm(RANDOM)
    out: dict[str, Any] = {"setting": experiment.setting(arm), "against": RANDOM}
    if not mine or not random:
        absent = arm if not mine else RANDOM
        why = "not planned in params.yaml" if absent not in experiment.arms else "every run is missing"
        return {**out, "no_result": f"no {absent} run ({why})"}
    both = [*mine, *random]
    lacking = [r.name for r in both if r.predictions is None]
    means = (mean_interval([r.metrics["test"]["accuracy"] for r in mine])["mean"],
             mean_interval([r.metrics["test"]["accuracy"] for r in random])["mean"])
    target = None if lacking else both[0].predictions[0]  # type: ignore[index]
    result = compare(target, [r.predictions[1] for r in mine if r.predictions is not None],
                     [r.predictions[1] for r in random if r.predictions is not None], means)
    return {**out, **result, **({"no_predictions": lacking} if lacking else {})}


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

ROWS = (  # (summary key, label, kind)
    ("test_accuracy", "test accuracy", "number"),
    ("test_sequence_accuracy", "test accuracy, whole CAPTCHA (all characters right)", "number"),
    ("test_loss", "test loss", "number"),
    ("best_val_accuracy", "best validation accuracy", "number"),
    ("last_val_accuracy", "validation accuracy, last epoch", "number"),
    ("last_train_accuracy", "train accuracy, last epoch", "number"),
    ("epochs_to_stability", "epochs to stability", "epochs"),
    ("epochs", "epochs trained", "epochs"),
    ("seconds", "training time (wall clock)", "seconds"),
)
KINDS = {key: kind for key, _, kind in ROWS}


def verdicts(summary: Mapping[str, Any]) -> list[str]:
    """One line per pretrained arm: its test accuracy minus random's, in points, and whether that is sure."""
    lines = []
    for arm, comparison in summary["comparisons"].items():
        if "no_result" not in comparison:
            lines.append(f"- {arm_title(arm, comparison['setting'])} − {arm_title(RANDOM)}: "
                         f"{fmt_difference(comparison)} points; "
                         f"helped: {helped(comparison)}")
    return lines


def published_row(figure: Mapping[str, Any], settings: Mapping[str, str]) -> list[str]:
    """A reference study's figure beside ours: metric, arm, published value(s), our mean ± std, note."""
    kind = KINDS.get(figure["metric"], "number")
    return [PUBLISHED_METRICS[figure["metric"]], arm_title(figure["weights"], settings.get(figure["weights"])),
            " and ".join(fmt_value(v, kind) for v in figure["values"]),
            fmt_stat(figure["ours"], kind) if figure["ours"] else "no run", figure["note"]]


def experiment_section(name: str, summary: Mapping[str, Any], figures: Mapping[str, str]) -> list[str]:
    results, arms, settings = summary["results"], summary["arms"], summary["settings"]
    pretrained = summary["pretrained_arm"]
    diff_key = f"{pretrained} - {RANDOM}"
    has_diff = diff_key in summary["difference"]
    lines = [f"## {name}", "", f"Dataset `{summary['dataset']}`, model `{summary['model']}`; "
             f"arms {', '.join(f'`{a}`' for a in arms)}; seeds {', '.join(map(str, summary['planned_seeds']))}.", ""]
    for which, reason in summary["no_result"].items():
        lines += [f"**No {which} run:** {reason}.", ""]
    if verdicts(summary):
        lines += ["**Pretrained minus random, test accuracy** (points, 95% paired bootstrap over test images):", "",
                  *verdicts(summary), ""]
    if any(results[a]["n"] for a in arms):
        header = ["", *(arm_title(a, settings[a]) for a in arms),
                  *([f"difference ({pretrained} − {RANDOM})"] if has_diff else [])]
        multihead = any("test_sequence_accuracy" in results[a] for a in arms)
        rows = []
        for key, label, kind in ROWS:
            if not any(key in results[a] for a in arms):
                continue
            if key == "test_accuracy" and multihead:
                label = "test accuracy, per character"
            cells = [fmt_stat(results[a].get(key), kind) for a in arms]
            if has_diff:
                d = summary["difference"][diff_key].get(key)
                cells.append("—" if d is None else fmt_value(d, kind, signed=True))
            rows.append([label, *cells])
        runs_cells = [f"{results[a]['n']} (seeds {', '.join(map(str, results[a]['seeds'])) or '—'})" for a in arms]
        rows.append(["runs", *runs_cells, *([""] if has_diff else [])])
        lines += [*markdown_table(header, rows), ""]
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
        lines += [f"![{name}: {label}]({path})", ""]
    if summary["missing"]:
        lines += [f"Missing runs ({len(summary['missing'])}): " +
                  "; ".join(f"`{m['run']}` ({m['reason']})" for m in summary["missing"]) + ".", ""]
    if summary["ignored_run_folders"]:
        lines += ["Run folders not planned by params.yaml, left out: " +
                  ", ".join(f"`{r}`" for r in summary["ignored_run_folders"]) + ".", ""]
    return lines


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


def readme(summaries: Mapping[str, Mapping[str, Any]], figures: Mapping[str, Mapping[str, str]]) -> str:
    """reports/README.md from the summaries (pure: the same summaries give the same text)."""
    missing = [(name, m) for name, s in summaries.items() for m in s["missing"]]
    lines = [
        "# Results: how much do ImageNet-pretrained weights help?",
        "",
        "Written by `python -m stages.report` (DVC stage `report`) from every run under "
        "`reports/runs/<experiment>/`; do not edit by hand. The same numbers are in `summary.json`; "
        "`dvc plots show` draws `curves.csv`; `mlflow ui` in the repository root shows every run.",
        "",
        "## The answer",
        "",
        *answer_table(summaries),
        "",
        "Each pretrained arm is one setting (Kornblith, Shlens & Le 2019): *fine-tuned* trains the pretrained "
        "base with its head, *fixed features* freezes the base under a linear or SVM head; *random init* trains "
        "the same model from random weights. Test accuracies are the mean over training seeds with a 95% t "
        "interval (one seed: no interval). The difference is in percentage points, from the test images' "
        "per-image correctness (each arm's seeds averaged per image; CAPTCHAs per character), with a 95% "
        f"paired bootstrap interval ({BOOTSTRAP_RESAMPLES:,} resamples of the images, seed {BOOTSTRAP_SEED}): it "
        "says how much the test set's sampling could move the difference. Pretraining *helped* when that "
        "interval lies above 0. The seeds' figures are each labelled with the metric they measured.",
        "",
        "## Overall",
        "",
        *overall_table(summaries),
        "",
        "**How to read it.** Numbers are the mean over training seeds and its 95% t interval in brackets "
        "(none with one seed); *difference* is the pretrained mean minus the random-initialisation mean. "
        "*Test accuracy* is on the held-out test split; for CAPTCHAs it is per "
        "character (the figure seed 000 most likely published), and the experiment's table adds whole-CAPTCHA "
        "accuracy (all six characters right). *Test loss* is Keras' total loss (for CAPTCHAs the sum over "
        "the six heads). *Best validation accuracy* is the best epoch's, the checkpoint that is tested. "
        f"*Epochs to stability* is {STABILITY_DEFINITION} "
        "(`transferbench.reporting.report.epochs_to_stability`), per run, then "
        "averaged over the seeds whose runs stabilised; a run whose last epoch is still further below its best "
        "is *not stable* and counted beside the mean, not in it. The tolerance is absolute: well above the "
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
    """Read the runs under ``reports_root`` and write README.md, summary.json, curves.csv and the PNGs there."""
    experiments = collect(params, reports_root)
    summaries: dict[str, dict] = {}
    figures: dict[str, dict[str, Path]] = {}
    curves = []
    for experiment in experiments:
        summaries[experiment.name] = summarise(experiment)
        figures[experiment.name] = {}
        frame = curves_frame(experiment)
        curves.append(frame)
        if experiment.runs:
            stability = {arm: s["epochs_to_stability"]["mean"]
                         for arm, s in summaries[experiment.name]["results"].items()
                         if s["n"] and s["epochs_to_stability"]["mean"] is not None}
            out = reports_root / FIGURES / f"{experiment.name}-curves.png"
            comparison_curves(frame, f"{experiment.name}: {experiment.model}, "
                              + " vs ".join(arm_title(a, experiment.setting(a)) for a in experiment.arms), out,
                              stability,
                              references(summaries[experiment.name]))
            figures[experiment.name]["learning curves"] = out
        matrices = summed_confusion(experiment)
        if matrices:
            out = reports_root / FIGURES / f"{experiment.name}-confusion.png"
            confusion_matrices({arm_title(a, experiment.setting(a)): m for a, m in matrices.items()},
                               f"{experiment.name}: test confusion matrices (summed over seeds)", out)
            figures[experiment.name]["confusion matrices"] = out

    links = {name: {label: path.relative_to(reports_root).as_posix() for label, path in figs.items()}
             for name, figs in figures.items()}
    summary = rounded({
        "definitions": {
            "epochs_to_stability": STABILITY_DEFINITION,
            "stability_tolerance": STABILITY_TOLERANCE,
            "std": "sample standard deviation over seeds (n - 1); null for one seed",
            "difference": "pretrained arm's mean minus random initialisation's (none) mean",
        },
        "overall": overall_rows(summaries),
        "experiments": summaries,
        "missing": [{"experiment": name, **m} for name, s in summaries.items() for m in s["missing"]],
        "figures": links,
    })
    write_json(reports_root / "summary.json", summary)
    write_text(reports_root / "README.md", readme(summary["experiments"], links))
    # Empty frames (experiments without runs) would turn the number columns into objects.
    table = pd.concat([c for c in curves if not c.empty] or curves[:1], ignore_index=True)
    write_text(reports_root / "curves.csv", table.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    return Report(experiments, summary, figures)


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
        for run in experiment.runs:
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
