"""Fixtures every test folder shares; importing this registers the tiny test backbones.

tests/unit: in one process, no servers or subprocesses. tests/integration: loopback servers, worker
processes, stages run as subprocesses, MLflow stores, data files across modules. tests/e2e: the DVC
pipeline in a copy of the repository. Real Xception / VGG16 / GoogLeNet builds and DVC runs are
marked ``slow``: plain ``pytest`` leaves them out, ``pytest -m slow`` runs them.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
from pathlib import Path

import pytest
import yaml

import tests.tiny_backbone  # noqa: F401  (registers `tiny` and `tiny_aux`)
from tests.stage_run import one_untuned_run
from transferbench.core import paths


@pytest.fixture
def params() -> dict:
    """A fresh copy of the repository's params.yaml, one untuned run per arm (one_untuned_run), to modify per test."""
    with open(paths.PARAMS, encoding="utf-8") as f:
        return one_untuned_run(copy.deepcopy(yaml.safe_load(f)))


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store made once per session: making one runs MLflow's migrations (~6 s)."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow_template")
    with contextlib.chdir(folder):  # the store's default artifact folder is ./mlruns
        MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder / "mlflow.db"


@pytest.fixture
def mlflow_db(mlflow_template, tmp_path) -> Path:
    """A fresh, empty MLflow SQLite store at tmp_path/mlflow.db (a copy of the session's migrated one)."""
    shutil.copyfile(mlflow_template, tmp_path / "mlflow.db")
    return tmp_path / "mlflow.db"
