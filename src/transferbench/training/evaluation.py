"""Stage `evaluate@<experiment>`: test-split metrics of every run, and their MLflow runs completed.

Writes reports/<experiment>/runs/<run>/ (metrics.json, history.csv, confusion.csv for single-output
tasks, learning_curves.png) and reports/<experiment>/metrics.json (per arm, for `dvc exp show`).

For several heads (CAPTCHAs): ``accuracy`` is per character, ``sequence_accuracy`` the share of
CAPTCHAs with every character right, ``position_accuracy`` per character position.
"""

from __future__ import annotations

import logging
import sys

import keras
import numpy as np
import pandas as pd

from transferbench.core import paths
from transferbench.core.files import write_json, write_text
from transferbench.core.inputs import missing, read_json_input
from transferbench.data.datasets import Task, load_split
from transferbench.models.backbones import load_model
from transferbench.models.heads import HEADS, HeadSpec, task_outputs
from transferbench.plots import learning_curves
from transferbench.study import runs
from transferbench.study.experiments import Experiment
from transferbench.study.params import Params
from transferbench.tracking import mlflow_runs as tracking
from transferbench.training.batches import ArrayBatches

log = logging.getLogger(__name__)


def task_metrics(task: Task, targets: np.ndarray, predictions: list[np.ndarray], head: HeadSpec,
                 predicted: np.ndarray) -> dict:
    """Loss (Keras' total: the sum over heads) and accuracies of ``predicted``, the classes the head decided."""
    loss_fn = keras.losses.get(head.loss(task))
    columns = targets.reshape(len(targets), -1)
    loss = 0.0
    for i, p in enumerate(predictions):
        # A single sigmoid unit predicts (n, 1): give its targets that rank, as `compile` does in training.
        y = columns[:, i:i + 1] if np.ndim(p) == 2 and np.shape(p)[1] == 1 else columns[:, i]
        loss += float(np.mean(keras.ops.convert_to_numpy(loss_fn(y, p))))
    correct = predicted == columns
    metrics: dict[str, float | dict[str, float]] = {"loss": loss, "accuracy": float(correct.mean()),
                                                     "n": int(len(targets))}
    if task.kind == "multihead":
        metrics["sequence_accuracy"] = float(correct.all(axis=1).mean())
        metrics["position_accuracy"] = {f"head{i}": float(correct[:, i].mean()) for i in range(task.n_outputs)}
    return metrics


def confusion(targets: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]) -> pd.DataFrame:
    """Rows: true class, columns: predicted class (single-output tasks)."""
    n = len(classes)
    counts = np.bincount(targets.reshape(-1) * n + predicted.reshape(-1), minlength=n * n).reshape(n, n)
    return pd.DataFrame(counts, index=pd.Index(classes, name="true"), columns=list(classes))


def evaluate(experiment: Experiment, model: keras.Model, images: np.ndarray,
             manifest: pd.DataFrame) -> tuple[dict, pd.DataFrame | None]:
    """Metrics on the test split (``images``, ``manifest``) and, for single-output tasks, the confusion matrix."""
    targets = experiment.spec.targets(manifest, experiment.dataset_settings)
    task = experiment.task
    batches = ArrayBatches(images, targets, experiment.settings.batch_size, n_outputs=task.n_outputs)
    raw = model.predict(batches, verbose=1 if sys.stdout.isatty() else 0)
    predictions = task_outputs(model, raw, task)
    head = HEADS.get(experiment.settings.head)
    predicted = head.predicted_classes(task, predictions)  # decided once: metrics and confusion agree
    metrics = task_metrics(task, targets, predictions, head, predicted)
    table = None
    if task.n_outputs == 1 and experiment.spec.classes:
        table = confusion(targets, predicted, experiment.spec.classes)
    return metrics, table


def evaluate_run(experiment: Experiment) -> dict:
    """Evaluate one trained run; write its report folder; complete its MLflow run."""
    model_dir, report_dir = runs.model_dir(experiment), runs.report_dir(experiment)
    trained = read_json_input(model_dir / "train.json", f"train@{experiment.name}")
    for name in ("model.keras", "history.csv"):
        if not (model_dir / name).is_file():
            raise missing(model_dir / name, f"train@{experiment.name}")
    images, manifest = load_split(experiment.dataset, "test")
    model = load_model(model_dir / "model.keras")
    test, table = evaluate(experiment, model, images, manifest)
    history = pd.read_csv(model_dir / "history.csv")
    metrics = {
        "test": test,
        "best_val_accuracy": float(history["val_accuracy"].max()),
        "best_epoch": int(history["epoch"].iloc[history["val_accuracy"].argmax()]),
        "epochs": int(history["epoch"].max()),
        "seconds": trained["seconds"],
        "weights": experiment.weights_label,
        "seed": experiment.seed,
        "mlflow_run_id": trained["mlflow_run_id"],
    }
    write_json(report_dir / "metrics.json", metrics)
    write_text(report_dir / "history.csv", (model_dir / "history.csv").read_text())
    files = [model_dir / "model.keras", report_dir / "history.csv", report_dir / "metrics.json"]
    if table is not None:
        write_text(report_dir / "confusion.csv", table.to_csv(lineterminator="\n"))
        files.append(report_dir / "confusion.csv")
    curves = report_dir / "learning_curves.png"
    learning_curves({experiment.weights_label: history},
                    f"{experiment.name}: {experiment.settings.model} ({runs.run_name(experiment)})", curves)
    files.append(curves)

    run_id = trained["mlflow_run_id"]
    flat = tracking.flatten("test", {k: v for k, v in test.items() if k != "n"})
    tracking.log_metrics(run_id, {**{k: float(v) for k, v in flat.items()},
                                  "best_val_accuracy": metrics["best_val_accuracy"]})
    tracking.log_artifacts(run_id, files)
    tracking.end_run(run_id)
    return metrics


def aggregate(name: str, per_run: list[dict]) -> dict:
    """``{name: {arm: {test_accuracy, ..., seconds}}}``: per arm, the mean (and std over seeds) of each metric.

    The experiment's name is the outer key so that `dvc exp show` names every column after it
    (``captcha.none.test_accuracy``) and no two experiments share one; few keys, so the table fits a terminal.
    """
    out: dict[str, dict] = {}
    for label in dict.fromkeys(m["weights"] for m in per_run):
        group = [m for m in per_run if m["weights"] == label]
        values = {"test_accuracy": [m["test"]["accuracy"] for m in group]}
        if "sequence_accuracy" in group[0]["test"]:
            values["test_sequence_accuracy"] = [m["test"]["sequence_accuracy"] for m in group]
        values["best_val_accuracy"] = [m["best_val_accuracy"] for m in group]
        summary: dict = {}
        for key, series in values.items():
            summary[key] = round(float(np.mean(series)), 4)
            if len(group) > 1:
                summary[f"{key}_std"] = round(float(np.std(series, ddof=1)), 4)
        summary["seconds"] = round(float(np.mean([m["seconds"] for m in group])), 1)
        out[label] = summary
    return {name: out}


def run(params: Params, name: str) -> dict:
    """Evaluate every run of experiment ``name``; write reports/<name>/metrics.json (see :func:`aggregate`)."""
    per_run = []
    for experiment in runs.runs(params, name):
        metrics = evaluate_run(experiment)
        per_run.append(metrics)
        test = metrics["test"]
        extra = f", whole-sequence {test['sequence_accuracy']:.4f}" if "sequence_accuracy" in test else ""
        log.info("%s %s: test accuracy %.4f%s, loss %.4f", name, runs.run_name(experiment), test["accuracy"], extra,
                 test["loss"])
        tracking.describe(metrics["mlflow_run_id"],
                          f"{name}: {experiment.settings.model} from {experiment.weights_label} weights, seed "
                          f"{experiment.seed}: test accuracy {test['accuracy']:.4f}{extra}")
    summary = aggregate(name, per_run)
    write_json(paths.experiment_report_dir(name) / "metrics.json", summary)
    return summary
