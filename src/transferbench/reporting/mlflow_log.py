"""Logging the report to MLflow: its figures to each run (under ``report/``), and the answer to the parent run of
each experiment's runs (differences and per-arm test figures as metrics, verdicts as tags, the report and
figures as artifacts). Warnings, never errors: the files are the product."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from transferbench.plots import confusion_matrices
from transferbench.reporting.answer import ANSWER_HEADER, answer_rows, metric_title
from transferbench.reporting.formatting import markdown_table
from transferbench.reporting.read import ExperimentRuns, Run
from transferbench.reporting.report import Report
from transferbench.reporting.summary import Comparison, ExperimentSummary
from transferbench.reporting.verdict import helped


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
    with tempfile.TemporaryDirectory() as tmp:
        return _logging("figures", lambda client: _log_figures(client, report, Path(tmp)))


def log_answers(report: Report, reports_root: Path) -> list[str]:
    """Log each experiment's answer to the parent run of its runs (:func:`log_answer`); return warnings.

    Never raises, like :func:`log_figures`.
    """
    return _logging("answers", lambda client: [w for experiment in report.experiments
                                              for w in log_answer(client, experiment, report, reports_root)])


class Unreachable(Exception):
    """MLflow cannot be asked: the logging stops with one warning."""


def _logging(what: str, log: Callable[[Any], list[str]]) -> list[str]:
    """``log(client)``'s warnings, or one warning where MLflow cannot be reached."""
    from transferbench.tracking import mlflow_runs as tracking

    # A server that is down should cost seconds, not MLflow's default minutes of retries.
    with env_defaults(MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_TIMEOUT="20"):
        try:
            try:
                client = tracking._client()
            except Exception as err:  # noqa: BLE001 - whatever the cause, there is no MLflow to log to
                raise Unreachable from err
            return log(client)
        except Unreachable as err:
            return [f"MLflow at {tracking.tracking_uri()} unreachable ({err.__cause__}); {what} not logged"]


def _log_figures(client: Any, report: Report, tmp: Path) -> list[str]:
    warnings: list[str] = []
    for experiment in report.experiments:
        shared = report.figures.get(experiment.name, {}).get("learning curves")
        for run in experiment.all_runs:
            warnings += log_run(client, experiment.name, run, [shared] if shared else [], tmp)
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


def log_answer(client: Any, experiment: ExperimentRuns, report: Report, reports_root: Path) -> list[str]:
    """The experiment's answer on the parent run of its runs (each, if they have several): metrics (only those that
    changed, so a rerun adds no history), verdict tags, the answer as description; README.md, summary.json and
    the experiment's figures under ``report/``."""
    summary = report.typed.experiments[experiment.name]
    known = known_runs(client, experiment)
    parents = list(dict.fromkeys(p for p in known.values() if p))
    if not parents:  # without any run MLflow knows, log_figures has said so run by run
        return [f"{experiment.name}: its MLflow runs have no parent run (logged before parent runs); answer not "
                "logged"] if known else []
    metrics, tags = answer_metrics(summary)
    tags["mlflow.note.content"] = "\n".join(markdown_table(ANSWER_HEADER, answer_rows(experiment.name, summary)))
    files = [(reports_root / "README.md", "report"), (reports_root / "summary.json", "report"),
             *((path, "report/figures") for path in report.figures.get(experiment.name, {}).values())]
    warnings = []
    for parent in parents:
        try:
            log_changed(client, parent, metrics, tags)
            for file, folder in files:
                if file.is_file():
                    client.log_artifact(parent, str(file), folder)
        except Exception as err:  # noqa: BLE001
            warnings.append(f"{experiment.name}: logging the answer to MLflow parent run {parent} failed ({err})")
    return warnings


def known_runs(client: Any, experiment: ExperimentRuns) -> dict[str, str | None]:
    """The experiment's runs that MLflow knows (run id -> parent run id, None without one), first met first;
    log_figures warns of the others."""
    from mlflow.exceptions import MlflowException

    found: dict[str, str | None] = {}
    for run in experiment.all_runs:
        run_id = run.metrics.get("mlflow_run_id")
        if not run_id:
            continue
        try:
            found[run_id] = client.get_run(run_id).data.tags.get("mlflow.parentRunId")
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise Unreachable from err
        except Exception as err:  # noqa: BLE001 - whatever the cause, there is no MLflow to log to
            raise Unreachable from err
    return found


def arm_keys(summary: ExperimentSummary) -> dict[str, str]:
    """Each arm's name in the parent's metrics: its setting (``fine_tuned``), or its arm label where two arms
    of the experiment share a setting."""
    count = Counter(summary.settings.values())
    return {arm: setting if count[setting] == 1 else arm for arm, setting in summary.settings.items()}


def answer_metrics(summary: ExperimentSummary) -> tuple[dict[str, float], dict[str, str]]:
    """At the main share: each arm's mean test figures (``random.test_accuracy``) and, per pretrained arm, the
    difference from random in points with its interval and Holm-adjusted p (``difference.fine_tuned.points``,
    ``.low``, ``.high``, ``.p_holm``) as metrics; the verdicts (``verdict.fine_tuned``) and the metric they are
    on (``verdict_metric``) as tags."""
    keys = arm_keys(summary)
    metrics = {f"{keys[arm]}.{stat}": float(value["mean"]) for arm, result in summary.results.items()
               for stat, value in result.stats.items()
               if stat.startswith("test_") and value and value.get("mean") is not None}
    tags = {"verdict_metric": metric_title(summary.verdict_metric, summary.task.n_outputs)}
    for arm, comparison in summary.comparisons.items():
        if "no_result" in comparison:
            tags[f"verdict.{keys[arm]}"] = f"not measured: {comparison['no_result']}"
            continue
        metrics.update(difference_metrics(f"difference.{keys[arm]}", comparison))
        tags[f"verdict.{keys[arm]}"] = helped(comparison)
    return metrics, tags


def difference_metrics(prefix: str, comparison: Comparison) -> dict[str, float]:
    """Pretrained minus random in points, with the interval the report shows beside it (over test images alone
    where an arm has one run) and the Holm-adjusted p; what the comparison lacks is left out."""
    one_run = min(comparison.get("seeds", [2])) < 2
    interval = comparison["images_only"] if one_run and "images_only" in comparison else comparison
    values = {"points": comparison.get("difference"), "low": interval.get("low"), "high": interval.get("high")}
    out = {f"{prefix}.{k}": round(100 * v, 4) for k, v in values.items() if v is not None}
    if comparison.get("p_holm") is not None:
        out[f"{prefix}.p_holm"] = float(comparison["p_holm"])
    return out


def log_changed(client: Any, run_id: str, metrics: Mapping[str, float], tags: Mapping[str, str]) -> None:
    """Set ``tags``; log the metrics whose value differs from the run's latest: MLflow appends every value
    logged to a metric's history, and the same report logged twice is not two measurements."""
    from mlflow.entities import Metric, RunTag

    logged = client.get_run(run_id).data.metrics
    now = int(time.time() * 1000)
    changed = [Metric(k, float(v), now, 0) for k, v in metrics.items() if logged.get(k) != float(v)]
    client.log_batch(run_id, metrics=changed, tags=[RunTag(k, v) for k, v in tags.items()])
