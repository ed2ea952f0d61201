"""MLflow: one MLflow experiment per dataset; in it one parent run per pipeline experiment and DVC experiment,
whose child runs are the trainings (``fine-tuned s42``, ``random s42``); one store for every DVC run.

The parent is found by its tags (``role=parent``, ``experiment``, ``dvc_experiment``: DVC_EXP_NAME, or
``workspace`` outside ``dvc exp run``), so the train stage of a later attempt reuses it; the report
stage logs the answer to it (transferbench.reporting.mlflow_log).

The store defaults to ``sqlite:///<repo>/mlflow.db`` with artifacts in ``<repo>/mlartifacts``, where
<repo> is the main repository even for ``dvc exp run --temp`` / ``--queue`` (DVC_ROOT points there),
so ``mlflow ui`` started in the repository root shows every run. MLFLOW_TRACKING_URI overrides it.

Several runs at once (``dvc queue start -j N``) share that SQLite file: our writes to it take turns
under a lock file beside it (``mlflow.db.lock``). MLflow would otherwise let two processes create the
tables, or the dataset's experiment, at the same moment, and one of them fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from transferbench.config.weights import FINE_TUNED, FIXED_FEATURES, RANDOM_INIT
from transferbench.core import paths
from transferbench.core.errors import UserError
from transferbench.core.redact import redact
from transferbench.study import runs
from transferbench.study.experiments import Experiment


def local_uri() -> str:
    """The repository's own store."""
    return f"sqlite:///{paths.main_repo_root() / 'mlflow.db'}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or local_uri()


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None (a server, another database)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def artifact_location(dataset: str) -> str | None:
    """Absolute artifact folder for a new MLflow experiment: beside a SQLite store (None: the server decides).

    Never MLflow's default ./mlruns: in a DVC copy (``--temp``, ``--queue``) that folder goes with the copy.
    """
    db = sqlite_file(tracking_uri())
    return None if db is None else (db.parent / "mlartifacts" / dataset).as_uri()


LOCK_TIMEOUT = 300.0  # seconds a write waits for the other runs' turns before giving up


class StoreBusy(UserError):
    """The local SQLite store stayed locked by other processes; the message says what to use instead."""


def busy_message(db: Path, waited: float) -> str:
    return (f"MLflow store {db}: still locked by another process after {waited:.0f} s; for many runs at once use an "
            f"MLflow server: `mlflow server --backend-store-uri sqlite:///{db} --artifacts-destination "
            f"{db.parent / 'mlartifacts'}`, then export MLFLOW_TRACKING_URI=http://127.0.0.1:5000 (README: MLflow)")


@contextlib.contextmanager
def store_lock(uri: str, timeout: float | None = None) -> Iterator[None]:
    """Hold the SQLite store at ``uri`` alone among our processes (a no-op for any other store)."""
    db = sqlite_file(uri)
    if db is None:
        yield
        return
    timeout = LOCK_TIMEOUT if timeout is None else timeout
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(f"{db.name}.lock"), "a") as handle:
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - started > timeout:
                    raise StoreBusy(busy_message(db, time.monotonic() - started)) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_client(uri: str):
    import mlflow

    # No mlflow.set_tracking_uri: it exports MLFLOW_TRACKING_URI to every process started after it.
    client = mlflow.MlflowClient(uri)
    if sqlite_file(uri) is not None:
        # MLflow opens a SQLite store (and creates its tables in a new file) on first use: do it now, under the
        # lock. A server made its own tables: asking it first would only add a round trip (and a login check)
        # to every write.
        client.search_experiments(max_results=1)
    return client


# MLflow 3's UI opens an experiment on its GenAI overview (traces) unless this tag says it trains models.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def _client():
    """A client on the tracking store, its tables created if the store is new."""
    uri = tracking_uri()
    with store_lock(uri):
        return _open_client(uri)


@contextlib.contextmanager
def _store() -> Iterator[Any]:
    """A client to write with while no other run of ours writes to the same SQLite store."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import OperationalError

    uri = tracking_uri()
    started = time.monotonic()
    with store_lock(uri):
        try:
            yield _open_client(uri)
        except (MlflowException, OperationalError) as err:  # MLflow wraps some of SQLAlchemy's errors, not all
            db = sqlite_file(uri)
            # Another program (an `mlflow ui`, a script) outlasted SQLite's own wait for the lock.
            if db is not None and "database is locked" in str(err):
                raise StoreBusy(busy_message(db, time.monotonic() - started)) from err
            raise


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


# A child run's name starts with its setting in the words people say.
SETTING_WORDS = {FINE_TUNED: "fine-tuned", FIXED_FEATURES: "fixed", RANDOM_INIT: "random"}


def run_name(experiment: Experiment, with_source: bool = False) -> str:
    """A training run's name under its parent: setting, share below the whole split, seed, e.g. ``fine-tuned s42``,
    ``random f0.1 s42``; ``with_source`` adds the pretrained source (``fine-tuned imagenet s42``)."""
    parts = [SETTING_WORDS[experiment.setting]]
    if with_source and experiment.setting != RANDOM_INIT:
        parts.append(experiment.arm.source_label)
    share = runs.fraction_label(experiment.train_fraction)
    return " ".join([*parts, *([f"f{share}"] if share else []), f"s{experiment.seed}"])


def names_need_source(experiments: Iterable[Experiment]) -> bool:
    """Whether two pretrained sources train in one setting (imagenet and a file), so names must say which."""
    sources: dict[str, set[str]] = {}
    for e in experiments:
        sources.setdefault(e.setting, set()).add(e.arm.source_label)
    return any(len(labels) > 1 for setting, labels in sources.items() if setting != RANDOM_INIT)


def dvc_experiment() -> str:
    """The DVC experiment this process runs in (DVC sets DVC_EXP_NAME in `dvc exp run`), else ``workspace``."""
    return os.environ.get("DVC_EXP_NAME") or "workspace"


PARENT_ROLE = {"role": "parent"}


def parent_name(experiment: str, dvc_exp: str) -> str:
    return f"{experiment} ({dvc_exp})"


def experiment_id(client, dataset: str) -> str:
    """The MLflow experiment of ``dataset``, created (marked as model training) on first use."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(dataset)
    if found:
        return found.experiment_id
    try:
        exp_id = client.create_experiment(dataset, artifact_location=artifact_location(dataset), tags=EXPERIMENT_KIND)
    except MlflowException as err:
        # Another machine logging to the same server made it since we looked: our lock covers one machine's SQLite
        # file, not a server every machine shares.
        found = client.get_experiment_by_name(dataset) if err.error_code == "RESOURCE_ALREADY_EXISTS" else None
        if found is None:
            raise
        return found.experiment_id
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
    with _store() as client:
        client.set_tag(run_id, "mlflow.note.content", text)


def parent_run(experiment: Experiment) -> str:
    """The parent run of ``experiment``'s pipeline experiment in this DVC experiment: found by its tags, else
    created; marked RUNNING while its runs train."""
    with _store() as client:
        exp_id = experiment_id(client, experiment.dataset)
        found = find_parent(client, exp_id, experiment.name, dvc_experiment())
        if found is not None:
            client.update_run(found, status="RUNNING")
            return found
        dvc_exp, commit = dvc_experiment(), git_commit()
        tags = {**PARENT_ROLE, "experiment": experiment.name, "dvc_experiment": dvc_exp,
                "dataset": experiment.dataset, "model": experiment.settings.model, "git_commit": commit,
                "mlflow.source.git.commit": commit, "mlflow.runName": parent_name(experiment.name, dvc_exp)}
        tags = {k: redact(v) for k, v in tags.items()}
        return client.create_run(exp_id, tags=tags, run_name=tags["mlflow.runName"]).info.run_id


class ParentRun:
    """The parent run of one train stage's runs, opened when its first run starts: a stage stopped by a missing
    input before any run leaves MLflow untouched, and one whose runs all finished earlier reopens nothing."""

    def __init__(self, experiments: Iterable[Experiment]):
        self.experiments = list(experiments)
        self.with_source = names_need_source(self.experiments)
        self.run_id: str | None = None

    def open(self) -> str:
        if self.run_id is None:
            self.run_id = parent_run(self.experiments[0])
        return self.run_id

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            end_run(self.run_id, status=status)


def find_parent(client, exp_id: str, experiment: str, dvc_exp: str) -> str | None:
    """The oldest live parent run of pipeline experiment ``experiment`` in DVC experiment ``dvc_exp``, or None."""
    # Names are compared here, not in the filter: MLflow's filter grammar cannot quote every character.
    found = client.search_runs([exp_id], filter_string="tags.role = 'parent'", order_by=["attributes.start_time ASC"])
    return next((run.info.run_id for run in found
                 if (run.data.tags.get("experiment"), run.data.tags.get("dvc_experiment")) == (experiment, dvc_exp)),
                None)


def parent_of(run_id: str) -> str | None:
    """The parent run id of training run ``run_id`` (None for runs logged before parents existed)."""
    with _store() as client:
        return client.get_run(run_id).data.tags.get("mlflow.parentRunId")


def set_tags(run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    with _store() as client:
        client.log_batch(run_id, tags=[RunTag(k, redact(str(v))) for k, v in tags.items()])


def start_run(experiment: Experiment, run_id: str | None = None, runtime: Mapping[str, str] | None = None,
              tuning: Mapping[str, Any] | None = None, parent: ParentRun | None = None) -> str:
    """Create the training run (or reopen ``run_id`` when resuming: the same id); return its id.

    With ``parent`` it is a child run, named by :func:`run_name`; a resumed run joins the parent of the DVC
    experiment that finishes it.

    ``runtime`` (backend, devices, precision, batch per device) becomes tags, not params: a resumed run
    may go on on another machine, and its tags then say where it finished. ``tuning`` (how the arm's
    learning rate was chosen, transferbench.training.tuning) becomes params beside the rate itself.
    """
    # Tags a resumed run takes again, like runtime: the DVC experiment that finishes it, and its parent.
    links = {} if parent is None else {"mlflow.parentRunId": parent.open(), "dvc_experiment": dvc_experiment()}
    with _store() as client:  # after parent.open(): our store lock is not reentrant
        return _start_run(client, experiment, run_id, {**(runtime or {}), **links}, dict(tuning or {}),
                          parent is not None and parent.with_source)


def _start_run(client, experiment: Experiment, run_id: str | None, current: dict[str, str],
               tuning: dict[str, Any], with_source: bool) -> str:
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        for key, value in current.items():
            client.set_tag(run_id, key, value)
        return run_id
    exp_id = experiment_id(client, experiment.dataset)
    commit = git_commit()
    tags = {
        "dataset": experiment.dataset,
        "model": experiment.settings.model,
        "weights": experiment.weights_label,
        "setting": experiment.setting,
        "arm": experiment.weights_label,
        "seed": str(experiment.seed),
        "strategy": experiment.settings.strategy,
        "experiment": experiment.name,
        "git_commit": commit,
        "mlflow.source.git.commit": commit,
        "dvc_experiment": dvc_experiment(),
        "mlflow.runName": run_name(experiment, with_source),
        **current,
    }
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # the GPU a queue worker claimed (core.devices), or the user's choice
        tags["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
    # A source's URLs (a mirror with its credentials) are params: MLflow keeps them, so never with secrets.
    tags = {k: redact(v) for k, v in tags.items()}
    run = client.create_run(exp_id, tags=tags, run_name=tags["mlflow.runName"])
    params = {"weights": experiment.weights, "seed": str(experiment.seed),
              "train_fraction": str(experiment.train_fraction), **flatten("tuning", tuning),
              **flatten("experiment", experiment.settings.model_dump(mode="json", exclude_unset=True)),
              **flatten(experiment.dataset, experiment.dataset_settings.model_dump(mode="json"))}
    from mlflow.entities import Param

    client.log_batch(run.info.run_id, params=[Param(k, redact(str(v))) for k, v in params.items()])
    return run.info.run_id


def log_metrics(run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    with _store() as client:
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, step or 0) for k, v in metrics.items()])


def log_results(run_id: str, metrics: Mapping[str, float]) -> None:
    """Log a run's final figures (test metrics) once: a re-evaluation logs only those that changed.

    MLflow appends every logged value to the metric's history, so evaluating a run again would show
    each test figure twice at step 0, as if it had been measured twice.
    """
    with _store() as client:
        logged = client.get_run(run_id).data.metrics
    changed = {k: float(v) for k, v in metrics.items() if logged.get(k) != float(v)}
    if changed:
        log_metrics(run_id, changed)


def log_artifacts(run_id: str, files: Iterable[Path], artifact_path: str | None = None) -> None:
    with _store() as client:
        for file in files:
            client.log_artifact(run_id, str(file), artifact_path)


def end_run(run_id: str, status: str = "FINISHED") -> None:
    with _store() as client:
        client.set_terminated(run_id, status=status)
