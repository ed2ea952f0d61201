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

from transferbench.core import paths
from transferbench.study.experiments import Experiment


def local_uri() -> str:
    """The repository's own store."""
    return f"sqlite:///{paths.main_repo_root() / 'mlflow.db'}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or local_uri()


def artifact_location(dataset: str) -> str | None:
    """Absolute artifact folder for a new MLflow experiment in the local store (None: the server decides)."""
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI itself: our own URI there still means the local store.
    if tracking_uri() != local_uri():
        return None
    return (paths.main_repo_root() / "mlartifacts" / dataset).as_uri()


# MLflow 3's UI opens an experiment on its GenAI overview (traces) unless this tag says it trains models.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


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


def experiment_id(client, dataset: str) -> str:
    """The MLflow experiment of ``dataset``, created (marked as model training) on first use."""
    found = client.get_experiment_by_name(dataset)
    if found:
        return found.experiment_id
    exp_id = client.create_experiment(dataset, artifact_location=artifact_location(dataset), tags=EXPERIMENT_KIND)
    if tracking_uri() == local_uri():
        _hide_empty_default(client)
    return exp_id


def _hide_empty_default(client) -> None:
    """Our own store's ``Default`` experiment never gets a run: delete it while empty, so the UI lists only ours."""
    default = client.get_experiment("0")
    if default.lifecycle_stage == "active" and not client.search_runs(["0"], max_results=1):
        client.delete_experiment("0")


def describe(run_id: str, text: str) -> None:
    """The run's description: the first thing its page in the UI shows."""
    _client().set_tag(run_id, "mlflow.note.content", text)


def start_run(experiment: Experiment, run_id: str | None = None) -> str:
    """Create the training run (or reopen ``run_id`` when resuming); return its id."""
    client = _client()
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        return run_id
    exp_id = experiment_id(client, experiment.dataset)
    commit = git_commit()
    tags = {
        "dataset": experiment.dataset,
        "model": experiment.settings.model,
        "weights": experiment.weights_label,
        "arm": experiment.weights_label,
        "seed": str(experiment.seed),
        "strategy": experiment.settings.strategy,
        "experiment": experiment.name,
        "git_commit": commit,
        "mlflow.source.git.commit": commit,
        "dvc_experiment": os.environ.get("DVC_EXP_NAME", "workspace"),
        "mlflow.runName": run_name(experiment),
    }
    run = client.create_run(exp_id, tags=tags, run_name=run_name(experiment))
    params = {"weights": experiment.weights, "seed": str(experiment.seed),
              **flatten("experiment", experiment.settings.model_dump(mode="json", exclude_unset=True)),
              **flatten(experiment.dataset, experiment.dataset_settings.model_dump(mode="json"))}
    from mlflow.entities import Param

    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
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
