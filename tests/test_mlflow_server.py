"""Our tracking code against a real `mlflow server` on loopback, read back through its REST API.

The server is the one a team would run (SQLite backend, proxied artifacts); the run goes through
transferbench.tracking.mlflow_runs exactly as training does (start_run, the per-epoch callback, metrics, an artifact,
end_run), and is read back with plain HTTP, not with MLflow's client.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
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
def server(tmp_path_factory):
    """URL of an `mlflow server` started for this module; its whole process group is ended afterwards."""
    root = tmp_path_factory.mktemp("mlflow_server")
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


def test_training_run_through_a_real_server(server, params, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    for name in ("DVC_EXP_BASELINE_REV", "DVC_EXP_NAME"):
        monkeypatch.delenv(name, raising=False)
    import keras

    from transferbench.tracking import mlflow_runs as tracking
    from transferbench.study.experiments import resolve
    from transferbench.study.params import check_params

    # A real experiment resolved from params: the CAPTCHA dataset section and a small CNN from scratch.
    params["weights"] = "none"
    params["experiments"] = {"cnn": {**{k: v for k, v in params["experiments"]["captcha"].items() if k != "weights"},
                                     "dataset": "captcha", "model": "cnn"}}
    experiment = resolve(check_params(params), "cnn")
    assert experiment.weights_label == "none"

    run_id = tracking.start_run(experiment)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(40, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    history = model.fit(x, y, validation_split=0.25, epochs=2, batch_size=8, verbose=0,
                        callbacks=[tracking.MlflowEpochMetrics(run_id)])
    tracking.log_metrics(run_id, {"test.accuracy": 0.625})
    note = tmp_path / "note.txt"
    note.write_text("logged by transferbench.tracking.mlflow_runs")
    tracking.log_artifacts(run_id, [note])
    tracking.end_run(run_id)

    api = f"{server}/api/2.0/mlflow"
    found = requests.get(f"{api}/experiments/get-by-name", params={"experiment_name": "captcha"}, timeout=30)
    assert found.status_code == 200, found.text  # one MLflow experiment per dataset, named after it
    experiment_id = found.json()["experiment"]["experiment_id"]
    searched = requests.post(f"{api}/runs/search", json={"experiment_ids": [experiment_id]}, timeout=30).json()
    assert len(searched["runs"]) == 1
    info, data = searched["runs"][0]["info"], searched["runs"][0]["data"]
    assert info["run_id"] == run_id and info["status"] == "FINISHED"
    assert info["run_name"] == tracking.run_name(experiment) and info["run_name"].startswith("captcha-cnn-none")

    tags = {t["key"]: t["value"] for t in data["tags"]}
    assert (tags["dataset"], tags["model"], tags["weights"]) == ("captcha", "cnn", "none")
    assert re.fullmatch(r"[0-9a-f]{40}", tags["git_commit"]) and tags["git_commit"] == tracking.git_commit()
    assert tags["mlflow.runName"] == info["run_name"]

    logged = {p["key"]: p["value"] for p in data["params"]}
    assert logged["weights"] == "none" and logged["seed"] == str(experiment.seed)
    assert logged["experiment.model"] == "cnn" and logged["experiment.dataset"] == "captcha"
    assert logged["captcha.width"] == str(params["captcha"]["width"])
    assert {m["key"]: m["value"] for m in data["metrics"]}["test.accuracy"] == 0.625

    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        got = requests.get(f"{api}/metrics/get-history", params={"run_id": run_id, "metric_key": key},
                           timeout=30).json()["metrics"]
        steps = sorted((m["step"], m["value"]) for m in got)
        assert [s for s, _ in steps] == [1, 2], key  # step = epoch number, one point per epoch
        assert [v for _, v in steps] == pytest.approx(history.history[key], rel=1e-5), key

    files = requests.get(f"{api}/artifacts/list", params={"run_id": run_id}, timeout=30).json()["files"]
    assert [f["path"] for f in files] == ["note.txt"]
    content = requests.get(f"{server}/get-artifact", params={"path": "note.txt", "run_uuid": run_id}, timeout=30)
    assert content.status_code == 200 and content.text == "logged by transferbench.tracking.mlflow_runs"
