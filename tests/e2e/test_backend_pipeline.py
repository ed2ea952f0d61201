"""The README's small CAPTCHA run, shrunk, through DVC on whichever backend this environment has: generate,
validate, weights, train, evaluate, report. `.ci/run` runs it with KERAS_BACKEND=jax where TensorFlow is
not installed; the training stage says, and the MLflow run is tagged with, what it trained on.
"""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml

from tests import repo_copy
from tests.readme_commands import small_run
from tests.repo_copy import copy_repository

pytestmark = [pytest.mark.slow, pytest.mark.jax]

TINY = {"captcha.train": "64", "captcha.validation": "32", "captcha.test": "32", "experiments.captcha.epochs": "2"}


def test_the_small_run_trains_evaluates_and_reports_on_this_backend(tmp_path):
    expected = os.environ["KERAS_BACKEND"]  # set by transferbench on import when the shell did not
    repo, env = copy_repository(tmp_path / "repo", lambda params: None, one_run=False)  # conf/ as shipped
    out = repo_copy.dvc(repo, env, *small_run(TINY)[1:])
    assert "'report'" in out and not re.search(r"^(ERROR|[\w@]+: error):", out, re.M), out[-3000:]
    batch = str(yaml.safe_load((repo / "params.yaml").read_text())["experiments"]["captcha"]["batch_size"])
    assert f"captcha none-s42: backend {expected} on cpu:0, precision float32, batch {batch} per device" in out, \
        out[-3000:]

    metrics = json.loads((repo / "reports/runs/captcha/none-s42/metrics.json").read_text())
    assert metrics["test"]["n"] == 32 and 0 <= metrics["test"]["accuracy"] <= 1 and metrics["epochs"] == 2
    assert "captcha" in (repo / "reports/README.md").read_text()

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    found = client.search_runs([client.get_experiment_by_name("captcha").experiment_id])
    (run,) = [r for r in found if r.data.tags.get("role") != "parent"]  # the training run, under its parent
    assert run.info.status == "FINISHED" and run.data.metrics["test.accuracy"] == pytest.approx(
        metrics["test"]["accuracy"], abs=1e-4)
    assert {k: run.data.tags[k] for k in ("backend", "devices", "precision", "batch_per_device", "feed")} == {
        "backend": expected, "devices": "cpu:0", "precision": "float32", "batch_per_device": batch, "feed": "host"}
