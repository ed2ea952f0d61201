"""Stage `evaluate@<experiment>`: test-split metrics, learning curves, and the MLflow run completed.

For several heads (CAPTCHAs): ``accuracy`` is per character, ``sequence_accuracy`` the share of
CAPTCHAs with every character right, ``position_accuracy`` per character position.
"""

from __future__ import annotations

import sys

import keras
import numpy as np
import pandas as pd

from stages import paths, tracking
from stages.config import ConfigError, load_params
from stages.datasets import Task, load_split
from stages.experiments import Experiment, resolve
from stages.feed import ArrayBatches
from stages.heads import HEADS
from stages.io import read_json, write_json
from stages.plots import learning_curves


def task_metrics(task: Task, targets: np.ndarray, predictions: list[np.ndarray], loss_name: str) -> dict:
    """Loss (Keras' total: the sum over heads) and accuracies from predicted probabilities."""
    loss_fn = keras.losses.get(loss_name)
    columns = targets.reshape(len(targets), -1)
    loss = sum(float(np.mean(keras.ops.convert_to_numpy(loss_fn(columns[:, i], p))))
               for i, p in enumerate(predictions))
    if task.kind == "binary":
        correct = (predictions[0].reshape(-1) > 0.5).astype(int)[:, None] == columns
    else:
        correct = np.stack([p.argmax(axis=-1) for p in predictions], axis=1) == columns
    metrics = {"loss": loss, "accuracy": float(correct.mean()), "n": int(len(targets))}
    if task.kind == "multihead":
        metrics["sequence_accuracy"] = float(correct.all(axis=1).mean())
        metrics["position_accuracy"] = {f"head{i}": float(correct[:, i].mean()) for i in range(task.n_outputs)}
    return metrics


def evaluate(experiment: Experiment, model: keras.Model) -> dict:
    images, manifest = load_split(experiment.dataset, "test")
    targets = experiment.spec.targets(manifest, experiment.dataset_values)
    task = experiment.task
    batches = ArrayBatches(images, targets, experiment.values["batch_size"], n_outputs=task.n_outputs)
    predictions = model.predict(batches, verbose=1 if sys.stdout.isatty() else 0)
    if not isinstance(predictions, (list, tuple)):
        predictions = [predictions]
    return task_metrics(task, targets, list(predictions), HEADS.get(experiment.values["head"]).loss(task))


def run(experiment: Experiment) -> dict:
    model_dir = paths.experiment_model_dir(experiment.name)
    report_dir = paths.experiment_report_dir(experiment.name)
    model = keras.saving.load_model(model_dir / "model.keras")
    test = evaluate(experiment, model)
    history = pd.read_csv(report_dir / "history.csv")
    metrics = {
        "test": test,
        "best_val_accuracy": float(history["val_accuracy"].max()),
        "best_epoch": int(history.loc[history["val_accuracy"].idxmax(), "epoch"]),
        "epochs": int(history["epoch"].max()),
    }
    write_json(report_dir / "metrics.json", metrics)
    curves = report_dir / "learning_curves.png"
    learning_curves({experiment.weights_label: history},
                    f"{experiment.name}: {experiment.values['model']} ({experiment.weights_label})", curves)

    run_id = read_json(model_dir / "mlflow_run.json")["run_id"]
    flat = tracking.flatten("test", {k: v for k, v in test.items() if k != "n"})
    tracking.log_metrics(run_id, {k: float(v) for k, v in flat.items()})
    tracking.log_metrics(run_id, {"best_val_accuracy": metrics["best_val_accuracy"]})
    tracking.log_artifacts(run_id, [model_dir / "model.keras", report_dir / "history.csv",
                                    report_dir / "metrics.json", curves])
    tracking.end_run(run_id)
    return metrics


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m stages.evaluate <experiment>")
    try:
        experiment = resolve(load_params(), argv[0])
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    metrics = run(experiment)
    test = metrics["test"]
    extra = f", whole-sequence accuracy {test['sequence_accuracy']:.4f}" if "sequence_accuracy" in test else ""
    print(f"{experiment.name}: test accuracy {test['accuracy']:.4f}{extra}, loss {test['loss']:.4f}")


if __name__ == "__main__":
    main()
