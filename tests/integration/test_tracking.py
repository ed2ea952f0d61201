"""Our tracking code on real MLflow stores, read back the way a user would see the run.

A training run goes through transferbench.tracking.mlflow_runs exactly as training does (start_run,
``fit`` with the per-epoch callback on the tiny test backbone, metrics, an artifact, end_run) into
the two kinds of store a team uses: a local SQLite store, what stages write by default (read back
with MLflow's client), and a real `mlflow server` on loopback (SQLite backend, proxied artifacts;
read back through its REST API with plain HTTP, not with MLflow's client). Starting the server
takes 10-45 s on a 2-core machine, so that case runs with `pytest -m slow`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

START_TIMEOUT = 150  # seconds; a cold start on a busy 2-core machine has taken 45


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, mlflow_template):
    """URL of an `mlflow server` started for this module; its whole process group is ended afterwards."""
    root = tmp_path_factory.mktemp("mlflow_server")
    shutil.copyfile(mlflow_template, root / "db")  # an empty store, already migrated: a faster start
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job workers: not needed, and slow
    log_path = root / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'db'}",
             "--artifacts-destination", str(root / "artifacts")],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not answering /health after {START_TIMEOUT} s:\n"
                            f"{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the worker it spawned
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class TrackedRun:
    run_id: str
    status: str
    run_name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


class RestReader:
    """A tracking server's runs, metrics and artifacts through its REST API."""

    def __init__(self, url: str):
        self.url, self.api = url, f"{url}/api/2.0/mlflow"

    def runs(self, experiment_name: str) -> list[TrackedRun]:
        found = requests.get(f"{self.api}/experiments/get-by-name", params={"experiment_name": experiment_name},
                             timeout=30)
        assert found.status_code == 200, found.text
        experiment_id = found.json()["experiment"]["experiment_id"]
        searched = requests.post(f"{self.api}/runs/search", json={"experiment_ids": [experiment_id]}, timeout=30)
        return [TrackedRun(run["info"]["run_id"], run["info"]["status"], run["info"]["run_name"],
                           *({item["key"]: item["value"] for item in run["data"].get(part, [])}
                             for part in ("tags", "params", "metrics")))
                for run in searched.json()["runs"]]

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        got = requests.get(f"{self.api}/metrics/get-history", params={"run_id": run_id, "metric_key": key},
                           timeout=30).json()["metrics"]
        return sorted((m["step"], m["value"]) for m in got)

    def artifacts(self, run_id: str) -> list[str]:
        files = requests.get(f"{self.api}/artifacts/list", params={"run_id": run_id}, timeout=30).json()["files"]
        return [f["path"] for f in files]

    def artifact_text(self, run_id: str, path: str) -> str:
        content = requests.get(f"{self.url}/get-artifact", params={"path": path, "run_uuid": run_id}, timeout=30)
        assert content.status_code == 200, content.text
        return content.text


class ClientReader:
    """A local store's runs, metrics and artifacts through MLflow's client."""

    def __init__(self, uri: str, downloads: Path):
        from mlflow import MlflowClient

        self.client, self.downloads = MlflowClient(uri), downloads

    def runs(self, experiment_name: str) -> list[TrackedRun]:
        found = self.client.get_experiment_by_name(experiment_name)
        assert found is not None, f"no MLflow experiment {experiment_name!r}"
        return [TrackedRun(run.info.run_id, run.info.status, run.info.run_name, run.data.tags, run.data.params,
                           run.data.metrics) for run in self.client.search_runs([found.experiment_id])]

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))

    def artifacts(self, run_id: str) -> list[str]:
        return [a.path for a in self.client.list_artifacts(run_id)]

    def artifact_text(self, run_id: str, path: str) -> str:
        self.downloads.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, path, str(self.downloads))).read_text()


@pytest.fixture(params=["sqlite", pytest.param("server", marks=pytest.mark.slow)])
def store(request, tmp_path, monkeypatch):
    """(tracking URI, reader) of a fresh local SQLite store, or of the module's `mlflow server`."""
    if request.param == "server":
        url = request.getfixturevalue("server")
        return url, RestReader(url)
    monkeypatch.chdir(tmp_path)  # anything MLflow would put in the working folder stays in the test's
    uri = f"sqlite:///{request.getfixturevalue('mlflow_db')}"
    return uri, ClientReader(uri, tmp_path / "downloads")


def test_a_training_run_is_tracked(store, params, monkeypatch, tmp_path):
    uri, reader = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in ("DVC_EXP_BASELINE_REV", "DVC_EXP_NAME"):
        monkeypatch.delenv(name, raising=False)

    from transferbench.study.experiments import resolve
    from transferbench.study.params import check_params
    from transferbench.tracking import mlflow_runs as tracking
    from transferbench.training.batches import ArrayBatches
    from transferbench.training.fit import fit
    from transferbench.training.train import MlflowEpochMetrics, runtime

    # A real experiment resolved from params: a photo dataset's section, the tiny backbone from scratch.
    dataset = "cats_and_dogs_filtered"
    params["weights"] = "none"
    params[dataset].update(height=16, width=16)
    params["experiments"] = {"tiny": {"dataset": dataset, "model": "tiny", "pooling": "avg", "head": "dense",
                                      "head_units": 0, "head_dropout": 0.0, "head_l2": 0.0, "strategy": "full",
                                      "augment": "none", "optimizer": "adam", "learning_rate": 0.01,
                                      "batch_size": 4, "epochs": 2, "schedule": {"kind": "constant"}}}
    experiment = resolve(check_params(params), "tiny")
    assert experiment.weights_label == "none"

    rng = np.random.default_rng(0)
    images, targets = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8), rng.integers(0, 2, 12)
    run_id = tracking.start_run(experiment, runtime=runtime(experiment, "float32", images[:8].nbytes))
    history = fit(experiment, None, ArrayBatches(images[:8], targets[:8], 4, shuffle=True, seed=0),
                  ArrayBatches(images[8:], targets[8:], 4), tmp_path / "work",
                  extra_callbacks=[MlflowEpochMetrics(run_id)], verbose=0)
    tracking.log_metrics(run_id, {"test.accuracy": 0.625})
    note = tmp_path / "note.txt"
    note.write_text("logged by transferbench.tracking.mlflow_runs")
    tracking.log_artifacts(run_id, [note])
    tracking.end_run(run_id)

    runs = reader.runs(dataset)  # one MLflow experiment per dataset, named after it
    assert len(runs) == 1
    run = runs[0]
    assert run.run_id == run_id and run.status == "FINISHED"
    assert run.run_name == tracking.run_name(experiment) == f"random s{experiment.seed}"  # a child's name

    assert (run.tags["dataset"], run.tags["model"], run.tags["weights"]) == (dataset, "tiny", "none")
    assert run.tags["setting"] == "random"
    assert re.fullmatch(r"[0-9a-f]{40}", run.tags["git_commit"]) and run.tags["git_commit"] == tracking.git_commit()
    assert run.tags["mlflow.runName"] == run.run_name
    import keras

    # What it trained on: the backend Keras runs, one device (this machine has no GPU), the global batch on it.
    assert (run.tags["backend"], run.tags["devices"]) == (keras.backend.backend(), "cpu:0")
    assert (run.tags["precision"], run.tags["batch_per_device"]) == ("float32", "4")
    assert run.tags["feed"] == "host"  # images held on the device only with a GPU (JAX)

    assert run.params["weights"] == "none" and run.params["seed"] == str(experiment.seed)
    assert run.params["experiment.model"] == "tiny" and run.params["experiment.dataset"] == dataset
    assert run.params[f"{dataset}.width"] == "16"
    assert run.metrics["test.accuracy"] == 0.625

    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        steps = reader.history(run_id, key)
        assert [s for s, _ in steps] == [1, 2], key  # step = epoch number, one point per epoch
        assert [v for _, v in steps] == pytest.approx([row[key] for row in history], rel=1e-5), key

    assert reader.artifacts(run_id) == ["note.txt"]
    assert reader.artifact_text(run_id, "note.txt") == "logged by transferbench.tracking.mlflow_runs"


def test_a_resumed_run_is_tagged_with_where_it_goes_on(mlflow_db, params, monkeypatch, tmp_path):
    """Backend and devices are tags, not params (which MLflow never changes): a run resumed elsewhere says so."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_db}")
    from transferbench.study.experiments import resolve
    from transferbench.study.params import check_params
    from transferbench.tracking import mlflow_runs as tracking

    experiment = resolve(check_params(params), "captcha")
    first = {"backend": "tensorflow", "devices": "cpu:0", "precision": "float32", "batch_per_device": "16"}
    run_id = tracking.start_run(experiment, runtime=first)
    tracking.end_run(run_id, status="KILLED")
    later = {"backend": "jax", "devices": "gpu:0", "precision": "mixed_float16", "batch_per_device": "16"}
    assert tracking.start_run(experiment, run_id, runtime=later) == run_id

    from mlflow import MlflowClient

    run = MlflowClient(f"sqlite:///{mlflow_db}").get_run(run_id)
    assert run.info.status == "RUNNING"
    assert {key: run.data.tags[key] for key in later} == later


def test_evaluating_a_run_again_logs_its_test_metrics_once(mlflow_db, params, monkeypatch, tmp_path):
    """A re-evaluation (dvc repro -f evaluate@...) must not show each test figure twice in the run's history."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_db}")
    from transferbench.study.experiments import resolve
    from transferbench.study.params import check_params
    from transferbench.tracking import mlflow_runs as tracking

    run_id = tracking.start_run(resolve(check_params(params), "captcha"))
    for _ in range(2):
        tracking.log_results(run_id, {"test.accuracy": 0.75, "test.loss": 1.5})
    tracking.log_results(run_id, {"test.accuracy": 0.75, "test.loss": 1.25})  # another model: the new loss only

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{mlflow_db}")
    assert [m.value for m in client.get_metric_history(run_id, "test.accuracy")] == [0.75]
    assert [m.value for m in client.get_metric_history(run_id, "test.loss")] == [1.5, 1.25]
