"""Stage `evaluate@<experiment>`: test-split metrics of every run, and their MLflow runs completed.

Writes reports/runs/<experiment>/<run>/ (metrics.json with the run's setting and loss definition,
predictions.npz, history.csv, confusion.csv and per-class accuracy for single-output tasks,
learning_curves.png) and reports/<experiment>/metrics.json (per arm, for `dvc exp show`).

For several heads (CAPTCHAs): ``accuracy`` is per character, ``sequence_accuracy`` the share of
CAPTCHAs with every character right, ``position_accuracy`` per character position.
"""

from __future__ import annotations

import io
import logging
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from transferbench.core import paths
from transferbench.core.files import atomic_path, write_json, write_text
from transferbench.core.inputs import missing, read_json_input
from transferbench.data.datasets import Task, load_split
from transferbench.models import strategies
from transferbench.models.assembly import loss_weights
from transferbench.models.backbones import load_model
from transferbench.models.catalog import MODELS
from transferbench.models.heads import head_spec, output_names, output_sources, task_outputs
from transferbench.plots import learning_curves
from transferbench.study import runs
from transferbench.study.experiments import Experiment, monitor
from transferbench.study.params import Params
from transferbench.tracking import mlflow_runs as tracking
from transferbench.training.batches import ArrayBatches

log = logging.getLogger(__name__)


LOSS_NAMES = {"binary_crossentropy": "binary cross-entropy",
              "sparse_categorical_crossentropy": "sparse categorical cross-entropy"}


def keras_loss(model: keras.Model, experiment: Experiment, raw: Any, targets: np.ndarray) -> tuple[float, float]:
    """(Keras' training loss, the task outputs' loss) of ``model.predict``'s ``raw`` outputs on ``targets``.

    The first is what ``fit`` logs as loss / val_loss and ``evaluate`` returns: every output's mean loss
    times its loss weight (GoogLeNet's auxiliary classifiers count 0.3 each), plus the regularisation
    penalties (the SVM's L2). The second sums the task's outputs alone, without penalties.
    """
    task, head = experiment.task, head_spec(experiment.settings.head)
    loss_fn = keras.losses.get(head.loss(task))
    names = list(model.output_names)
    listed = list(raw.values()) if isinstance(raw, Mapping) else raw if isinstance(raw, (list, tuple)) else [raw]
    by_name = raw if isinstance(raw, Mapping) else dict(zip(names, listed, strict=True))
    weights = loss_weights(experiment.settings.model, task) if len(names) > 1 else {names[0]: 1.0}
    columns = targets.reshape(len(targets), -1)
    index = {name: i for i, name in enumerate(output_names(task))}
    total = task_loss = 0.0
    for name, source in output_sources(task, names).items():
        p = np.asarray(by_name[name])
        column = columns[:, index[source]]
        # A single sigmoid unit predicts (n, 1): give its targets that rank, as `compile` does in training.
        y = column[:, None] if p.ndim == 2 and p.shape[1] == 1 else column
        value = float(np.mean(keras.ops.convert_to_numpy(loss_fn(y, p))))
        total += weights[name] * value
        task_loss += value if name == source else 0.0
    penalty = sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses)
    return total + penalty, task_loss


def loss_definition(experiment: Experiment) -> str:
    """One line saying what ``test.loss`` (and train / validation loss) sums, and what ``test.task_loss`` is."""
    settings, task = experiment.settings, experiment.task
    head = head_spec(settings.head).loss(task)
    name = LOSS_NAMES.get(head, head) if isinstance(head, str) else "one-vs-rest squared hinge"
    text = f"sum over {task.n_outputs} heads of {name}" if task.n_outputs > 1 else name
    aux = MODELS.get(settings.model).aux_loss_weights
    if aux:
        text += "".join(f" + {w:g} x the same on auxiliary classifier {i}" for i, w in enumerate(aux, start=1))
    if settings.head_l2:
        text += f" + L2 penalty {settings.head_l2:g} x the classifiers' squared kernels"
    weighted = ("; training loss only: classes weighted (balanced)" if settings.class_weight == "balanced" else "")
    return (f"{text} (Keras' training loss: loss, val_loss and test.loss alike{weighted}); "
            "test.task_loss: the task's outputs alone, no auxiliary classifiers or penalty")


def task_metrics(task: Task, targets: np.ndarray, predicted: np.ndarray) -> dict:
    """Accuracies of ``predicted``, the classes the head decided (per position for several outputs)."""
    columns = targets.reshape(len(targets), -1)
    correct = predicted == columns
    metrics: dict[str, float | dict[str, float]] = {"accuracy": float(correct.mean()), "n": int(len(targets))}
    if task.kind == "multihead":
        metrics["sequence_accuracy"] = float(correct.all(axis=1).mean())
        metrics["position_accuracy"] = {f"head{i}": float(correct[:, i].mean()) for i in range(task.n_outputs)}
    else:
        metrics["balanced_accuracy"] = balanced_accuracy(columns, predicted)
    return metrics


def balanced_accuracy(targets: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes present in ``targets`` (single output): accuracy that an imbalanced test
    split (pets: 10% cats) cannot lift by favouring its largest class."""
    targets, predicted = targets.reshape(-1), predicted.reshape(-1)
    return float(np.mean([(predicted[targets == c] == c).mean() for c in np.unique(targets)]))


def best_of_last_phase(history: pd.DataFrame, phases: list[strategies.Phase],
                       column: str = "val_accuracy") -> tuple[int, str]:
    """The epoch whose model training kept (best ``column`` of the last phase, first if tied), and its phase."""
    last = phases[-1]
    rows = history[history["epoch"] > last.start]
    return int(rows["epoch"].iloc[int(rows[column].to_numpy().argmax())]), last.name


def per_class_accuracy(targets: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]) -> dict[str, float]:
    """Recall of each class with test images (single-output tasks): the share of its images predicted right."""
    targets, predicted = targets.reshape(-1), predicted.reshape(-1)
    return {name: float((predicted[targets == c] == c).mean())
            for c, name in enumerate(classes) if (targets == c).any()}


def confusion(targets: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]) -> pd.DataFrame:
    """Rows: true class, columns: predicted class (single-output tasks)."""
    n = len(classes)
    counts = np.bincount(targets.reshape(-1) * n + predicted.reshape(-1), minlength=n * n).reshape(n, n)
    return pd.DataFrame(counts, index=pd.Index(classes, name="true"), columns=list(classes))


def write_predictions(path: Path, targets: np.ndarray, predicted: np.ndarray) -> None:
    """predictions.npz with int arrays ``target`` and ``predicted``, (n,) or (n, positions), in test-manifest order.

    The zip entries carry a fixed date (np.savez_compressed stamps the current time), so the same
    predictions give the same bytes and DVC sees no change.
    """
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, array in (("target", targets), ("predicted", predicted)):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array, dtype=np.int64), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue(),
                             compress_type=zipfile.ZIP_DEFLATED)


@dataclass(frozen=True)
class Evaluated:
    """One run's test metrics, its decided classes and targets (squeezed to (n,) for one output)."""

    metrics: dict
    targets: np.ndarray
    predicted: np.ndarray
    confusion: pd.DataFrame | None


def evaluate(experiment: Experiment, model: keras.Model, images: np.ndarray, manifest: pd.DataFrame) -> Evaluated:
    """Metrics on the test split (``images``, ``manifest``) and, for single-output tasks, the confusion matrix."""
    targets = experiment.spec.targets(manifest, experiment.dataset_settings)
    task, classes = experiment.task, experiment.spec.classes
    batches = ArrayBatches(images, targets, experiment.settings.batch_size, n_outputs=task.n_outputs)
    raw = model.predict(batches, verbose=1 if sys.stdout.isatty() else 0)
    head = head_spec(experiment.settings.head)
    # Decided once: metrics, per-class accuracy, confusion matrix and predictions.npz agree.
    predicted = head.predicted_classes(task, task_outputs(model, raw, task))
    loss, task_loss = keras_loss(model, experiment, raw, np.asarray(targets))
    metrics = {"loss": loss, "task_loss": task_loss, **task_metrics(task, targets, predicted)}
    table = None
    if task.n_outputs == 1:
        predicted = predicted.reshape(-1)
    if task.n_outputs == 1 and classes:
        metrics["per_class_accuracy"] = per_class_accuracy(targets, predicted, classes)
        table = confusion(targets, predicted, classes)
    shape = (len(targets),) if task.n_outputs == 1 else (len(targets), task.n_outputs)
    return Evaluated(metrics, np.asarray(targets).reshape(shape), predicted, table)


def evaluate_run(experiment: Experiment) -> dict:
    """Evaluate one trained run; write its report folder; complete its MLflow run."""
    model_dir, report_dir = runs.model_dir(experiment), runs.report_dir(experiment)
    trained = read_json_input(model_dir / "train.json", f"train@{experiment.name}")
    for name in ("model.keras", "history.csv"):
        if not (model_dir / name).is_file():
            raise missing(model_dir / name, f"train@{experiment.name}")
    images, manifest = load_split(experiment.dataset, "test", experiment.image_shape)
    model = load_model(model_dir / "model.keras")
    result = evaluate(experiment, model, images, manifest)
    test = {k: v for k, v in result.metrics.items() if k != "per_class_accuracy"}
    history = pd.read_csv(model_dir / "history.csv")
    # Where the training run came from (how its rate was chosen, its share of the data): the report
    # says what each arm was given. Runs trained before these were recorded report without them.
    given = {key: trained[key] for key in ("learning_rate", "tuning", "train_fraction", "train_images",
                                            "epochs_planned") if key in trained}
    phases = strategies.phases(experiment.settings.model_copy(
        update={"epochs": trained.get("epochs_planned", experiment.settings.epochs)}))
    column = monitor(experiment.settings)
    best_epoch, best_phase = best_of_last_phase(history, phases, column if column in history else "val_accuracy")
    metrics = {
        "test": test,
        "best_val_accuracy": float(history.loc[history["epoch"] == best_epoch, "val_accuracy"].iloc[0]),
        "best_epoch": best_epoch,
        "best_phase": best_phase,
        "selection_metric": column if column in history else "val_accuracy",
        "phases": [{"name": p.name, "start": p.start, "end": p.end} for p in phases],
        "epochs": int(history["epoch"].max()),
        "seconds": trained["seconds"],
        **given,
        "weights": experiment.weights_label,
        "setting": experiment.setting,
        "seed": experiment.seed,
        "loss_definition": loss_definition(experiment),
        "mlflow_run_id": trained["mlflow_run_id"],
    }
    if "per_class_accuracy" in result.metrics:
        metrics["per_class_accuracy"] = result.metrics["per_class_accuracy"]
    write_json(report_dir / "metrics.json", metrics)
    write_predictions(report_dir / "predictions.npz", result.targets, result.predicted)
    write_text(report_dir / "history.csv", (model_dir / "history.csv").read_text())
    files = [model_dir / "model.keras", report_dir / "history.csv", report_dir / "metrics.json",
             report_dir / "predictions.npz"]
    if result.confusion is not None:
        write_text(report_dir / "confusion.csv", result.confusion.to_csv(lineterminator="\n"))
        files.append(report_dir / "confusion.csv")
    curves = report_dir / "learning_curves.png"
    learning_curves({experiment.weights_label: history},
                    f"{experiment.name}: {experiment.settings.model} ({runs.run_name(experiment)})", curves)
    files.append(curves)

    run_id = trained["mlflow_run_id"]
    flat = tracking.flatten("test", {k: v for k, v in test.items() if k != "n"})
    tracking.log_results(run_id, {**{k: float(v) for k, v in flat.items()},
                                  "best_val_accuracy": metrics["best_val_accuracy"]})
    tracking.log_artifacts(run_id, files)
    tracking.end_run(run_id)
    return metrics


def arm_share(metrics: dict) -> str:
    """A run's arm, with its share of the training split below the whole: ``none``, ``none-f0.05``."""
    share = runs.fraction_label(metrics.get("train_fraction", 1.0))
    return f"{metrics['weights']}-f{share}" if share else str(metrics["weights"])


def aggregate(name: str, per_run: list[dict]) -> dict:
    """``{name: {arm: {test_accuracy, ..., seconds}}}``: per arm, the mean (and std over seeds) of each metric.

    The experiment's name is the outer key so that `dvc exp show` names every column after it
    (``captcha.none.test_accuracy``) and no two experiments share one; few keys, so the table fits a terminal.
    """
    out: dict[str, dict] = {}
    for label in dict.fromkeys(map(arm_share, per_run)):
        group = [m for m in per_run if arm_share(m) == label]
        values = {"test_accuracy": [m["test"]["accuracy"] for m in group]}
        for key in ("sequence_accuracy", "balanced_accuracy"):
            if key in group[0]["test"]:
                values[f"test_{key}"] = [m["test"][key] for m in group]
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
