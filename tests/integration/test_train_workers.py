"""The train stage with k runs per GPU (gpu_runs_per_device): worker processes, each on a GPU slot of its own,
train the very runs the stage trains alone, bit for bit, and a failing worker stops the stage in one line.

On a machine without a GPU, TRANSFERBENCH_GPUS=1 makes the stage count one, so with k = 2 it trains two
jobs at once in two workers, each claiming a slot of "GPU 0" (on the CPU: the backend ignores it), as on
a GPU machine. The stage runs as DVC runs it, on a copy of the code (tests/stage_run.py); the small CNN
(a registered model: the workers are fresh interpreters, where tests' private backbones are unknown).
"""

from __future__ import annotations

import copy
import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixture_data import write_prepared_photos
from tests.stage_run import copy_code, run_stage
from transferbench.core import paths
from transferbench.core.files import read_json
from transferbench.study.params import check_params

NAME = "cats_and_dogs_filtered_cnn"
# What differs between two trainings of one run: the clock, and the MLflow run it logged to.
TIMES = {"epoch_seconds", "validation_seconds", "images_per_second", "seconds"}


def small_study(params: dict, per_gpu: int) -> None:
    """Two seeds of the small CNN at 24x24, two tuning trials first: four jobs, two of them at a time with k=2."""
    recipe = params["experiments"][NAME]
    recipe.update(epochs=2, batch_size=8, head_units=8)
    params["experiments"] = {NAME: recipe}
    params["cats_and_dogs_filtered"].update(height=24, width=24)
    params.update(seeds=2, tuning={"kind": "grid", "factors": [1.0, 10.0], "epochs": 0.5},
                  gpu_runs_per_device=per_gpu)


def study_copy(root: Path, per_gpu: int, monkeypatch) -> Path:
    """The code, params, prepared data and initial weights of the small study under ``root``."""
    holder: dict = {}
    copy_code(root, lambda params: (small_study(params, per_gpu), holder.update(params=copy.deepcopy(params))))
    params = check_params(holder["params"])
    write_prepared_photos(root / "data" / "prepared" / "cats_and_dogs_filtered", "cats_and_dogs_filtered",
                          params.dataset("cats_and_dogs_filtered").model_dump(),
                          per_class={"train": 12, "validation": 6, "test": 2})
    import stages.weights

    with monkeypatch.context() as patched:
        patched.setattr(paths, "MODELS", root / "models")
        stages.weights.prepare_arms(params, NAME)
    return root


def history(folder: Path) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO((folder / "history.csv").read_text())))
    return [{k: v for k, v in row.items() if k not in TIMES} for row in rows]


def record(folder: Path) -> dict:
    return {k: v for k, v in read_json(folder / "train.json").items() if k not in ("mlflow_run_id", "seconds")}


def weights(folder: Path) -> list[np.ndarray]:
    from transferbench.models.backbones import load_model

    return load_model(folder / "model.keras", compile=False).get_weights()


def test_the_coordinator_loads_no_backend():
    """With several GPU slots the stage's own process coordinates: a backend started there would hold GPU memory
    (JAX: 75% of the first GPU) beside its workers'."""
    probe = ("import sys, stages.train, transferbench.training.workers; "
             "print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [paths.ROOT / "src", paths.ROOT]))}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setenv("TRANSFERBENCH_GPUS", "1")
    for variable in ("CUDA_VISIBLE_DEVICES", "XLA_PYTHON_CLIENT_MEM_FRACTION", "TF_FORCE_GPU_ALLOW_GROWTH"):
        monkeypatch.delenv(variable, raising=False)


# Three interpreters start Keras and train: ~60 s of CPU. Not in the JAX set, whose time it would take
# (it passes there too: KERAS_BACKEND=jax .venv-jax/bin/pytest -m slow tests/integration/test_train_workers.py).
@pytest.mark.slow
def test_two_runs_per_gpu_in_workers_are_the_runs_trained_alone_bit_for_bit(tmp_path, monkeypatch, one_gpu):
    trained = {}
    for k in (1, 2):
        root = study_copy(tmp_path / f"k{k}", k, monkeypatch)
        done = run_stage(root, "train", NAME)
        assert done.returncode == 0, done.stderr[-4000:]
        if k == 2:
            assert f"{NAME}: 2 run(s) (none-s42, none-s43), 2 at once in worker processes (2 GPU slot(s): 2 per " \
                   "GPU)" in done.stderr
            assert "GPU 0 of 1 claimed (slot 2 of 2, XLA_PYTHON_CLIENT_MEM_FRACTION=0.400)" in done.stderr
        else:
            assert "worker" not in done.stderr and "claimed" not in done.stderr
        trained[k] = root / "models" / NAME / "runs"
        assert not (root / "tmp" / "train" / NAME).exists(), "the work folder goes once the runs are published"

    assert sorted(p.name for p in trained[1].iterdir()) == sorted(p.name for p in trained[2].iterdir()) \
        == ["none-s42", "none-s43"]
    for run in ("none-s42", "none-s43"):
        alone, shared = trained[1] / run, trained[2] / run
        assert record(alone) == record(shared), run  # the trials' scores, the rate chosen, the epochs
        assert record(alone)["tuning"]["kind"] == "grid" and len(record(alone)["tuning"]["scores"]) == 2
        assert history(alone) == history(shared), run  # every epoch's loss, accuracy and rate, as repr'd floats
        for a, b in zip(weights(alone), weights(shared), strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b), run

    from mlflow import MlflowClient

    logged = {}
    for k in (1, 2):
        client = MlflowClient(f"sqlite:///{tmp_path / f'k{k}' / 'mlflow.db'}")
        found = client.search_runs([client.get_experiment_by_name("cats_and_dogs_filtered").experiment_id])
        (parent,) = [r for r in found if r.data.tags.get("role") == "parent"]
        children = [r for r in found if r.data.tags.get("role") != "parent"]
        assert parent.info.status == "FINISHED" and len(children) == 2
        assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}  # one parent
        assert sorted(read_json(trained[k] / run / "train.json")["mlflow_run_id"] for run in ("none-s42", "none-s43")) \
            == sorted(r.info.run_id for r in children)
        # Each run's own status (evaluation finishes it), parameters and per-epoch metrics, but the clock's.
        logged[k] = sorted((r.info.run_name, r.info.status, r.data.params,
                            {m: v for m, v in r.data.metrics.items() if m not in TIMES}) for r in children)
    assert logged[1] == logged[2]


@pytest.mark.slow  # the coordinator and two workers start Keras: ~20 s of CPU
def test_a_failing_worker_fails_the_stage_in_one_line_and_publishes_nothing(tmp_path, monkeypatch, one_gpu):
    root = study_copy(tmp_path, 2, monkeypatch)
    for split in ("validation",):  # the workers find it gone when they load their data: after the stage's checks
        for item in (root / "data" / "prepared" / "cats_and_dogs_filtered" / split).iterdir():
            item.unlink()
    done = run_stage(root, "train", NAME)
    assert done.returncode == 1, done.stderr[-4000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"train@{NAME}: error: ") and "images.npy" in last and "prepare@" in last, last
    assert "Traceback" not in done.stderr
    assert "failed in its worker process" in done.stderr
    assert not (root / "models" / NAME / "runs").exists()
    assert os.listdir(root / "models" / NAME) == ["init"]
