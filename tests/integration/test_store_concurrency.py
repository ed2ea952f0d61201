"""Runs writing to one local MLflow SQLite store at the same moment: none lost, none failing.

Each writer is its own process, as two `dvc queue` workers are; they start their runs together
on a store that does not exist yet, the hardest case (MLflow creates the tables on first use).
They run in another folder than the store's, as DVC's copies do: artifacts still go beside the store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from transferbench.core import paths
from transferbench.tracking import mlflow_runs as tracking

EPOCHS = 5

WRITER = f"""
import sys, time
from pathlib import Path
import yaml
from transferbench.study.experiments import resolve
from transferbench.study.params import check_params
from transferbench.tracking import mlflow_runs as tracking

ready, go, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
experiment = resolve(check_params(yaml.safe_load(Path({str(paths.PARAMS)!r}).read_text())), "captcha")
ready.touch()
while not go.exists():
    time.sleep(0.001)
run_id = tracking.start_run(experiment)
for epoch in range(1, {EPOCHS} + 1):
    tracking.log_metrics(run_id, {{"val_accuracy": epoch / 10}}, step=epoch)
tracking.log_metrics(run_id, {{"test.accuracy": 0.5}})
note = Path(name + ".txt")
note.write_text(name)
tracking.log_artifacts(run_id, [note])
tracking.end_run(run_id)
print(name, run_id)
"""


def test_two_processes_start_runs_at_once_on_a_new_store(tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{db}", PYTHONPATH=os.pathsep.join(map(str, sys.path)))
    go = tmp_path / "go"
    names = ["worker-a", "worker-b"]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / f"{n}.ready"), str(go), n],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in names]
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"{n}.ready").exists() for n in names):  # both imported: start together
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
            "\n".join(p.communicate()[1][-3000:] for p in procs if p.poll() is not None)
        time.sleep(0.05)
    go.touch()
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-4000:]
        assert "database is locked" not in err
    run_ids = {out.split()[1]: out.split()[0] for out, _ in results}
    assert len(run_ids) == 2

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("captcha")
    assert experiment is not None, "the dataset's experiment, created once"
    assert len(client.search_experiments(filter_string="name = 'captcha'")) == 1
    runs = client.search_runs([experiment.experiment_id])
    assert {r.info.run_id for r in runs} == set(run_ids)
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.metrics["test.accuracy"] == 0.5
        steps = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_accuracy"))
        assert steps == [(e, pytest.approx(e / 10)) for e in range(1, EPOCHS + 1)]
        assert run.info.artifact_uri.startswith((db.parent / "mlartifacts" / "captcha").as_uri())
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == [f"{run_ids[run.info.run_id]}.txt"]
    assert not (tmp_path / "mlruns").exists(), "artifacts in the writer's folder are lost with a DVC copy"


def test_a_write_waits_for_the_one_before(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    order: list[str] = []
    with tracking.store_lock(uri):
        def second() -> None:
            with tracking.store_lock(uri, timeout=30):
                order.append("second")

        thread = threading.Thread(target=second)  # its own open file: flock treats it as another writer
        thread.start()
        time.sleep(0.3)
        order.append("first")
    thread.join(timeout=30)
    assert order == ["first", "second"]


def test_a_store_locked_too_long_names_the_server_to_use_instead(tmp_path):
    db = tmp_path / "mlflow.db"
    with tracking.store_lock(f"sqlite:///{db}"):
        with pytest.raises(tracking.StoreBusy) as caught:
            with tracking.store_lock(f"sqlite:///{db}", timeout=0.2):
                pass
    message = str(caught.value)
    assert str(db) in message and "mlflow server --backend-store-uri" in message and "MLFLOW_TRACKING_URI" in message
    with tracking.store_lock(f"sqlite:///{db}", timeout=0.2):  # released: the next one proceeds at once
        pass


def test_a_server_store_takes_no_lock(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with tracking.store_lock("http://127.0.0.1:5000"), tracking.store_lock("http://127.0.0.1:5000", timeout=0):
        pass
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # waits out SQLite's busy timeouts: 5 s opening the store, MLflow's 20 s for a write
def test_a_store_held_by_another_program_ends_in_one_line_naming_the_server(mlflow_db, monkeypatch):
    import sqlite3

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_db}")
    other = sqlite3.connect(mlflow_db, isolation_level=None)  # an `mlflow ui` or a script, not one of our runs
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(tracking.StoreBusy) as caught:
            tracking.log_metrics("0" * 32, {"loss": 1.0})
    finally:
        other.execute("ROLLBACK")
        other.close()
    message = str(caught.value)
    assert "\n" not in message and str(mlflow_db) in message and "mlflow server" in message
