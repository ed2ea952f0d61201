"""The answer where people look first: one MLflow parent run per pipeline experiment and DVC experiment, the
training runs as its children named by setting and seed, the report's differences and files on the parent.

Training is played through transferbench.tracking as the train and evaluate stages call it (parent_run,
start_run under it, test metrics, end_run), on a real SQLite store; the report reads hand-made run folders
that carry those runs' ids (tests.report_runs), as evaluate writes them, and logs with the stage's functions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.report_runs import write_run
from transferbench.core import paths
from transferbench.reporting import report
from transferbench.reporting.mlflow_log import log_answers
from transferbench.reporting.verdict import helped
from transferbench.study import runs
from transferbench.study.params import Params, check_params
from transferbench.tracking import mlflow_runs as tracking

# Test accuracy per arm and seed; the predictions below agree with it on 60 test images.
ACCURACY = {("imagenet", 42): 0.9, ("imagenet", 43): 0.85, ("none", 42): 0.6, ("none", 43): 0.55}
N_TEST = 60


def make_params(**changes) -> Params:
    """The repository's pets experiment alone: fine-tuned ImageNet against random, two seeds."""
    params = yaml.safe_load(paths.PARAMS.read_text(encoding="utf-8"))
    params.update({"weights": ["imagenet", "none"], "fixed_features": False, "seed": 42, "seeds": 2,
                   "experiments": {"pets": params["experiments"]["pets"]}, **changes})
    return check_params(params)


@pytest.fixture
def store(mlflow_db, tmp_path, monkeypatch):
    """A fresh SQLite store as MLFLOW_TRACKING_URI, outside any DVC experiment; its client."""
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{mlflow_db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    return MlflowClient(uri)


def train(params: Params, monkeypatch, dvc_name: str | None = None) -> dict[tuple[str, int], str]:
    """Every run of pets under its parent, as train@pets and evaluate@pets log them; (arm, seed) -> run id."""
    if dvc_name:
        monkeypatch.setenv("DVC_EXP_NAME", dvc_name)
    parent = tracking.ParentRun(runs.runs(params, "pets"))
    ids = {}
    for e in parent.experiments:
        run_id = tracking.start_run(e, parent=parent)
        tracking.log_results(run_id, {"test.accuracy": ACCURACY[e.weights_label, e.seed]})
        tracking.end_run(run_id)
        ids[e.weights_label, e.seed] = run_id
    parent.end()
    return ids


def write_reports(root: Path, ids: dict[tuple[str, int], str]) -> Path:
    """reports/runs/pets/<arm>-s<seed>/ as evaluate writes them, each with its MLflow run id."""
    target = np.arange(N_TEST) % 37
    for (weights, seed), accuracy in ACCURACY.items():
        predicted = target.copy()
        wrong = np.random.default_rng(seed).permutation(N_TEST)[:round(N_TEST * (1 - accuracy))]
        predicted[wrong] = (target[wrong] + 1) % 37
        write_run(root, "pets", weights, seed, [0.5, accuracy, accuracy], {"accuracy": accuracy, "loss": 1 - accuracy},
                  run_id=ids[weights, seed], predictions=(target, predicted),
                  setting="random" if weights == "none" else "fine_tuned")
    return root


def parents(client) -> dict[str, object]:
    """The pets experiment's parent runs by name."""
    exp_id = client.get_experiment_by_name("pets").experiment_id
    return {run.info.run_name: run for run in client.search_runs([exp_id], "tags.role = 'parent'")}


def children(client, parent_id: str) -> list:
    exp_id = client.get_experiment_by_name("pets").experiment_id
    return client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent_id}'")


def report_and_log(params: Params, root: Path) -> report.Report:
    built = report.build(params, root)
    assert log_answers(built, root) == []
    return built


def test_training_runs_are_children_of_one_parent_named_by_setting_and_seed(store, monkeypatch):
    ids = train(make_params(), monkeypatch)

    found = parents(store)
    assert list(found) == ["pets (workspace)"]
    parent = found["pets (workspace)"]
    assert parent.info.status == "FINISHED"
    assert {k: parent.data.tags[k] for k in ("role", "experiment", "dvc_experiment", "dataset")} == {
        "role": "parent", "experiment": "pets", "dvc_experiment": "workspace", "dataset": "pets"}

    kids = {run.info.run_name: run for run in children(store, parent.info.run_id)}
    assert sorted(kids) == ["fine-tuned s42", "fine-tuned s43", "random s42", "random s43"]
    first = kids["fine-tuned s42"]
    assert first.info.run_id == ids["imagenet", 42]
    assert {k: first.data.tags[k] for k in ("arm", "seed", "setting", "experiment", "dvc_experiment")} == {
        "arm": "imagenet", "seed": "42", "setting": "fine_tuned", "experiment": "pets", "dvc_experiment": "workspace"}
    # The accuracy column of the training view: every child has the metric.
    assert {name: run.data.metrics["test.accuracy"] for name, run in kids.items()} == {
        "fine-tuned s42": 0.9, "fine-tuned s43": 0.85, "random s42": 0.6, "random s43": 0.55}


def test_the_report_puts_the_difference_the_arms_and_the_report_on_the_parent(store, monkeypatch, tmp_path):
    params = make_params()
    root = write_reports(tmp_path / "reports", train(params, monkeypatch))
    built = report_and_log(params, root)

    summary = built.typed.experiments["pets"]
    comparison = summary.comparisons["imagenet"]
    parent = store.get_run(parents(store)["pets (workspace)"].info.run_id)
    metrics, tags = parent.data.metrics, parent.data.tags
    assert metrics["difference.fine_tuned.points"] == pytest.approx(100 * comparison["difference"])
    assert tags["verdict_metric"] == "balanced accuracy"  # pets trains with balanced class weights
    assert metrics["difference.fine_tuned.low"] < metrics["difference.fine_tuned.points"] \
        < metrics["difference.fine_tuned.high"]
    assert metrics["difference.fine_tuned.p_holm"] == pytest.approx(comparison["p_holm"])
    assert tags["verdict.fine_tuned"] == helped(comparison) and tags["verdict.fine_tuned"].startswith("yes")
    assert metrics["fine_tuned.test_accuracy"] == pytest.approx(0.875)
    assert metrics["random.test_accuracy"] == pytest.approx(0.575)
    assert "pets" in tags["mlflow.note.content"] and "did pretraining help?" in tags["mlflow.note.content"]

    artifacts = {a.path for a in store.list_artifacts(parent.info.run_id, "report")}
    assert {"report/README.md", "report/summary.json", "report/figures"} <= artifacts
    figures = {a.path for a in store.list_artifacts(parent.info.run_id, "report/figures")}
    assert "report/figures/pets-curves.png" in figures
    page = store.download_artifacts(parent.info.run_id, "report/README.md", str(tmp_path / "download"))
    assert Path(page).read_text() == (root / "README.md").read_text()


def test_a_second_dvc_experiment_gets_its_own_parent_and_a_rerun_reuses_its_own(store, monkeypatch, tmp_path):
    params = make_params()
    train(params, monkeypatch)
    ids = train(params, monkeypatch, dvc_name="brisk-oats")
    train(params, monkeypatch, dvc_name="brisk-oats")  # train@pets again in the same DVC experiment

    found = parents(store)
    assert sorted(found) == ["pets (brisk-oats)", "pets (workspace)"]
    assert found["pets (brisk-oats)"].data.tags["dvc_experiment"] == "brisk-oats"
    assert len(children(store, found["pets (workspace)"].info.run_id)) == 4
    assert len(children(store, found["pets (brisk-oats)"].info.run_id)) == 8  # both trainings' runs

    # The report of brisk-oats's runs goes to brisk-oats's parent, whatever experiment the report runs in.
    monkeypatch.setenv("DVC_EXP_NAME", "some-other")
    report_and_log(params, write_reports(tmp_path / "reports", ids))
    assert "difference.fine_tuned.points" in store.get_run(found["pets (brisk-oats)"].info.run_id).data.metrics
    assert "difference.fine_tuned.points" not in store.get_run(found["pets (workspace)"].info.run_id).data.metrics


def test_rerunning_the_report_adds_no_history_to_the_parent(store, monkeypatch, tmp_path):
    params = make_params()
    root = write_reports(tmp_path / "reports", train(params, monkeypatch))
    for _ in range(2):
        report_and_log(params, root)
    parent_id = parents(store)["pets (workspace)"].info.run_id
    for key in ("difference.fine_tuned.points", "difference.fine_tuned.p_holm", "random.test_accuracy"):
        assert len(store.get_metric_history(parent_id, key)) == 1, key


def test_a_resumed_run_keeps_its_id_and_joins_the_parent(store, params):
    experiment = runs.runs(check_params(params), "captcha")[0]
    run_id = tracking.start_run(experiment)  # killed before it had a parent
    tracking.end_run(run_id, status="KILLED")
    parent = tracking.ParentRun([experiment])
    assert tracking.start_run(experiment, run_id, parent=parent) == run_id
    assert tracking.parent_of(run_id) == parent.run_id is not None


def test_a_stage_whose_runs_never_start_opens_no_parent(store, params):
    parent = tracking.ParentRun(runs.runs(check_params(params), "captcha"))
    parent.end(status="KILLED")  # stopped by a missing input before its first run
    assert parent.run_id is None and store.get_experiment_by_name("captcha") is None


def test_child_names_say_setting_share_and_seed_and_the_source_only_when_asked(store):
    experiments = runs.runs(make_params(fixed_features=True, seeds=1,
                                        train_fraction=[0.1, 1.0]), "pets")
    assert not tracking.names_need_source(experiments)
    assert [tracking.run_name(e) for e in experiments] == [
        "fine-tuned f0.1 s42", "fine-tuned s42", "fixed f0.1 s42", "fixed s42", "random f0.1 s42", "random s42"]
    assert tracking.run_name(experiments[1], with_source=True) == "fine-tuned imagenet s42"
    assert tracking.run_name(experiments[-1], with_source=True) == "random s42"


def test_runs_logged_before_parents_get_a_warning_not_an_error(store, monkeypatch, tmp_path):
    params = make_params()
    ids = {(e.weights_label, e.seed): tracking.start_run(e) for e in runs.runs(params, "pets")}
    root = write_reports(tmp_path / "reports", ids)
    warnings = log_answers(report.build(params, root), root)
    assert warnings == ["pets: its MLflow runs have no parent run (logged before parent runs); answer not logged"]
