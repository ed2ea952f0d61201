"""What `mlflow ui` opens on: experiments marked as model training, no empty Default, runs saying what they are,
and the README's link to the training runs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from transferbench.study.experiments import resolve
from transferbench.study.params import check_params
from transferbench.tracking import mlflow_runs as tracking


@pytest.fixture
def local_store(mlflow_db, tmp_path, monkeypatch):
    """The repository's own store (no MLFLOW_TRACKING_URI), rooted at tmp_path as DVC_ROOT."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{mlflow_db}")


def test_the_experiment_opens_on_its_training_runs_and_default_is_gone(local_store, params):
    assert local_store.get_experiment("0").lifecycle_stage == "active"  # MLflow makes it in every new store
    run_id = tracking.start_run(resolve(check_params(params), "captcha"))

    experiment = local_store.get_experiment_by_name("captcha")
    # The value MLflow 3's UI reads to show the runs table instead of the GenAI overview.
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert local_store.get_experiment("0").lifecycle_stage == "deleted"
    assert [e.name for e in local_store.search_experiments()] == ["captcha"]

    tags = local_store.get_run(run_id).data.tags
    assert (tags["arm"], tags["seed"], tags["experiment"]) == ("imagenet", "42", "captcha")
    tracking.describe(run_id, "captcha: test accuracy 0.61")
    assert local_store.get_run(run_id).data.tags["mlflow.note.content"] == "captcha: test accuracy 0.61"


def test_a_default_with_runs_is_kept(local_store, params):
    local_store.create_run("0")
    tracking.start_run(resolve(check_params(params), "captcha"))
    assert local_store.get_experiment("0").lifecycle_stage == "active"


def test_a_tracking_server_keeps_its_default(local_store, params, monkeypatch, mlflow_db, tmp_path):
    from mlflow import MlflowClient

    elsewhere = tmp_path / "server" / "mlflow.db"  # someone else's store: not ours to tidy
    elsewhere.parent.mkdir()
    shutil.copyfile(mlflow_db, elsewhere)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")
    tracking.start_run(resolve(check_params(params), "captcha"))
    server = MlflowClient(f"sqlite:///{elsewhere}")
    assert server.get_experiment("0").lifecycle_stage == "active"
    assert server.get_experiment_by_name("captcha").tags["mlflow.experimentKind"] == "custom_model_development"
    assert server.get_experiment_by_name("captcha").artifact_location != (tmp_path / "mlartifacts/captcha").as_uri()


def test_artifacts_go_to_mlartifacts_also_after_mlflow_exported_its_uri(local_store, params, tmp_path):
    tracking.start_run(resolve(check_params(params), "captcha"))  # sets MLFLOW_TRACKING_URI to our own store
    tracking.start_run(resolve(check_params(params), "pets"))
    for name in ("captcha", "pets"):
        assert local_store.get_experiment_by_name(name).artifact_location == (tmp_path / "mlartifacts" / name).as_uri()


def test_the_readme_link_opens_the_training_runs_of_the_first_experiment(local_store, params):
    """README: `http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning`. Our store's first
    experiment is 1 (Default, 0, is deleted), and the UI that `mlflow ui` serves reads ``workflowType`` from
    the page's address, ``machine_learning`` being the training runs' view."""
    tracking.start_run(resolve(check_params(params), "captcha"))
    assert local_store.get_experiment_by_name("captcha").experiment_id == "1"

    import mlflow

    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    reads = [f.name for f in bundle.glob("main.*.js")
             if re.search(r'\.get\("workflowType"\)', text := f.read_text(encoding="utf-8"))
             and 'MACHINE_LEARNING="machine_learning"' in text]
    assert reads, f"MLflow {mlflow.__version__}'s UI no longer reads ?workflowType=machine_learning: update README"
