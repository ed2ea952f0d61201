"""MLflow: one MLflow experiment per dataset, one run per training, one store for every DVC run.

The store defaults to ``sqlite:///<repo>/mlflow.db`` with artifacts in ``<repo>/mlartifacts``, where
<repo> is the main repository even for ``dvc exp run --temp`` / ``--queue`` (DVC_ROOT points there),
so ``mlflow ui`` started in the repository root shows every run. MLFLOW_TRACKING_URI overrides it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import keras

from transferbench.core import paths
from transferbench.core.redact import redact
from transferbench.study.experiments import Experiment


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.main_repo_root() / 'mlflow.db'}"


def artifact_location(dataset: str) -> str | None:
    """Absolute artifact folder for a new MLflow experiment in the local store (None: the server decides)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (paths.main_repo_root() / "mlartifacts" / dataset).as_uri()


def _client():
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.MlflowClient(tracking_uri())


def git_commit() -> str:
    """The commit the run started from: DVC's baseline for experiments, else the checkout's HEAD."""
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    if baseline:
        return baseline
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def flatten(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Nested mapping -> {"a.b.c": value}, as MLflow wants params and metrics."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(name, value))
        else:
            out[name] = value
    return out


def run_name(experiment: Experiment) -> str:
    """``<dataset>-<model>-<weights>-s<seed>``, e.g. ``pets-xception-imagenet-s42``: the same for every run."""
    return f"{experiment.dataset}-{experiment.settings.model}-{experiment.weights_label}-s{experiment.seed}"


def start_run(experiment: Experiment, run_id: str | None = None) -> str:
    """Create the training run (or reopen ``run_id`` when resuming); return its id."""
    client = _client()
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        return run_id
    found = client.get_experiment_by_name(experiment.dataset)
    exp_id = found.experiment_id if found else client.create_experiment(
        experiment.dataset, artifact_location=artifact_location(experiment.dataset))
    commit = git_commit()
    tags = {
        "dataset": experiment.dataset,
        "model": experiment.settings.model,
        "weights": experiment.weights_label,
        "setting": experiment.setting,
        "seed": str(experiment.seed),
        "strategy": experiment.settings.strategy,
        "experiment": experiment.name,
        "git_commit": commit,
        "mlflow.source.git.commit": commit,
        "dvc_experiment": os.environ.get("DVC_EXP_NAME", "workspace"),
        "mlflow.runName": run_name(experiment),
    }
    # A source's URLs (a mirror with its credentials) are params: MLflow keeps them, so never with secrets.
    tags = {k: redact(v) for k, v in tags.items()}
    run = client.create_run(exp_id, tags=tags, run_name=run_name(experiment))
    params = {"weights": experiment.weights, "seed": str(experiment.seed),
              **flatten("experiment", experiment.settings.model_dump(mode="json", exclude_unset=True)),
              **flatten(experiment.dataset, experiment.dataset_settings.model_dump(mode="json"))}
    from mlflow.entities import Param

    client.log_batch(run.info.run_id, params=[Param(k, redact(str(v))) for k, v in params.items()])
    return run.info.run_id


def log_metrics(run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client = _client()
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step or 0) for k, v in metrics.items()])


def log_artifacts(run_id: str, files: Iterable[Path]) -> None:
    client = _client()
    for file in files:
        client.log_artifact(run_id, str(file))


def end_run(run_id: str, status: str = "FINISHED") -> None:
    _client().set_terminated(run_id, status=status)


class MlflowEpochMetrics(keras.callbacks.Callback):
    """Logs every numeric epoch metric (train and validation) to the run, step = epoch number."""

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id

    def on_epoch_end(self, epoch, logs=None):
        log_metrics(self.run_id, {k: float(v) for k, v in (logs or {}).items()}, step=epoch + 1)
