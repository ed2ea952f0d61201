"""Two DVC experiments queued and run by two workers at once write both MLflow runs to the one store,
each training on a GPU of its own.

`dvc queue start -j 2` runs each experiment in its own copy under .dvc/tmp/exps; both trainings
open the repository's mlflow.db at about the same time (creating it, since none exists yet).
TRANSFERBENCH_GPUS=2 makes this machine count two GPUs: each training claims one (transferbench.core.devices)
and says which in its log and its MLflow run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests import repo_copy
from tests.repo_copy import copy_repository

pytestmark = pytest.mark.slow

TINY = {"train": 32, "validation": 16, "test": 16, "workers": 1}
RATES = {"queued-a": 0.01, "queued-b": 0.002}
QUEUE_TIMEOUT = 1500  # seconds; two pipelines side by side on a busy 2-core machine


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict]:
    def tiny(params: dict) -> None:
        params["captcha"].update(TINY)
        # The small CNN: the mechanism under test is the store, not the model.
        params["experiments"]["captcha"].update(model="cnn", epochs=2, batch_size=16)

    root, env = copy_repository(tmp_path_factory.mktemp("queue") / "repo", tiny)
    env.pop("CUDA_VISIBLE_DEVICES", None)  # a user's choice would win over the claims under test
    return root, {**env, "TRANSFERBENCH_GPUS": "2"}


def queue_states(repo_env) -> dict[str, str]:
    """Experiment name -> Queued / Running / Success / Failed, from `dvc queue status`."""
    out = repo_copy.dvc(*repo_env, "queue", "status", stdout_only=True)
    states = {}
    for line in out.splitlines():
        words = line.split()
        for name in RATES:
            if name in words:
                states[name] = next((w for w in words if w in ("Queued", "Running", "Success", "Failed")), "?")
    return states


def test_two_queued_experiments_with_two_workers_land_in_one_store(repo):
    root, _ = repo
    for name, rate in RATES.items():
        repo_copy.dvc(*repo, "exp", "run", "--queue", "--name", name, "-S", "weights=none",
                      "-S", f"experiments.captcha.learning_rate={rate}", "evaluate@captcha")
    repo_copy.dvc(*repo, "queue", "start", "-j", "2")
    deadline = time.monotonic() + QUEUE_TIMEOUT
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = queue_states(repo)
        if len(states) == len(RATES) and all(s in ("Success", "Failed") for s in states.values()):
            break
        time.sleep(10)
    logs = {name: repo_copy.dvc(*repo, "queue", "logs", name) for name in RATES}
    assert states == {name: "Success" for name in RATES}, "\n\n".join(
        f"{name}:\n{log[-4000:]}" for name, log in logs.items())
    for name, log in logs.items():
        assert "database is locked" not in log, f"{name}:\n{log[-4000:]}"

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("captcha")
    assert experiment is not None
    found = client.search_runs([experiment.experiment_id])
    parents = {r.info.run_id: r for r in found if r.data.tags.get("role") == "parent"}
    runs = {r.data.tags["dvc_experiment"]: r for r in found if r.info.run_id not in parents}
    # Each queued experiment trains under a parent run of its own, where its report logs the answer.
    assert sorted(parents[r.data.tags["mlflow.parentRunId"]].data.tags["dvc_experiment"] for r in runs.values()) \
        == sorted(RATES)
    assert sorted(runs) == sorted(RATES), "one run per queued experiment, none lost, none twice"
    for name, rate in RATES.items():
        run = runs[name]
        assert run.info.status == "FINISHED"
        assert float(run.data.params["experiment.learning_rate"]) == rate
        assert "test.accuracy" in run.data.metrics
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
        assert "model.keras" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # Both trainings ran at once, so each claimed its own GPU; the stage log and the run say which.
    devices = {name: runs[name].data.tags.get("cuda_visible_devices") for name in RATES}
    assert sorted(devices.values()) == ["0", "1"], devices
    for name, log in logs.items():
        assert f"GPU {devices[name]} of 2 claimed" in log, f"{name}:\n{log[-4000:]}"
    assert not list((root / ".dvc" / "tmp").rglob("mlflow.db")), "a store inside a worker's copy is lost with it"
    # Each experiment's own metrics came back to the repository with it.
    shown = json.loads(repo_copy.dvc(*repo, "exp", "show", "--json", stdout_only=True))
    assert all(name in json.dumps(shown) for name in RATES)
