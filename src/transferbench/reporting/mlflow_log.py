"""Logging the report's figures to each run in MLflow, under ``report/``; warnings, never errors: the files are the
product."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transferbench.plots import confusion_matrices
from transferbench.reporting.read import Run
from transferbench.reporting.report import Report


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


class Unreachable(Exception):
    """MLflow cannot be asked: the logging stops with one warning."""


def _log_figures(report: Report, tmp: Path) -> list[str]:
    from transferbench.tracking import mlflow_runs as tracking

    warnings: list[str] = []
    try:
        try:
            client = tracking._client()
        except Exception as err:  # noqa: BLE001 - whatever the cause, there is no MLflow to log to
            raise Unreachable from err
        for experiment in report.experiments:
            shared = report.figures.get(experiment.name, {}).get("learning curves")
            for run in experiment.all_runs:
                warnings += log_run(client, experiment.name, run, [shared] if shared else [], tmp)
    except Unreachable as err:
        return warnings + [f"MLflow at {tracking.tracking_uri()} unreachable ({err.__cause__}); figures not logged"]
    return warnings


def log_run(client: Any, experiment: str, run: Run, files: list[Path], tmp: Path) -> list[str]:
    """Log ``files`` and the run's own confusion matrix to its MLflow run; a warning where it cannot."""
    from mlflow.exceptions import MlflowException

    from transferbench.tracking import mlflow_runs as tracking

    where, run_id = f"{experiment}/{run.name}", run.metrics.get("mlflow_run_id")
    if not run_id:
        return [f"{where}: no mlflow_run_id in metrics.json; figures not logged"]
    try:
        client.get_run(run_id)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return [f"{where}: MLflow run {run_id} not found in {tracking.tracking_uri()}"]
        raise Unreachable from err
    except Exception as err:  # noqa: BLE001 - whatever the cause, there is no MLflow to log to
        raise Unreachable from err
    if run.confusion is not None:
        out = tmp / experiment / run.name / "confusion.png"
        confusion_matrices({run.name: run.confusion}, f"{experiment} {run.name}: test confusion matrix", out)
        files = [*files, out]
    try:
        for file in files:
            client.log_artifact(run_id, str(file), "report")
    except Exception as err:  # noqa: BLE001
        return [f"{where}: logging to MLflow run {run_id} failed ({err})"]
    return []
