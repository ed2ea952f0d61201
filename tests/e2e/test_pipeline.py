"""End to end: the DVC pipeline of the CAPTCHA experiment in a copy of the repository, tiny params.

Runs what a user runs (`dvc exp run -S weights=none`, `dvc repro`, `dvc exp run -S weights=<file>`)
and reads back what they would look at: the metrics file, `dvc metrics show`, and the MLflow runs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests import repo_copy
from tests.repo_copy import copy_repository

pytestmark = pytest.mark.slow

TINY = {"train": 32, "validation": 16, "test": 16, "workers": 2}
# The CAPTCHA experiment's last stage: DVC runs it and what it needs, not the photo datasets' fetches.
CAPTCHA = "evaluate@captcha"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict]:
    def tiny(params: dict) -> None:
        params["captcha"].update(TINY)
        # The CPU study's small CNN in place of Xception: this test is about DVC and what users read back
        # (test_data_pipeline trains the real Xception through DVC), and each Xception build here cost ~40 s.
        params["experiments"]["captcha"].update(epochs=1, batch_size=16, model="cnn", pooling="flatten",
                                                head_units=128)

    return copy_repository(tmp_path_factory.mktemp("pipeline") / "repo", tiny)


def dvc(repo_env, *args: str, stdout_only: bool = False) -> str:
    return repo_copy.dvc(*repo_env, *args, stdout_only=stdout_only)


def mlflow_runs(repo: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("captcha")
    assert experiment is not None, "one MLflow experiment per dataset, named after it"
    found = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    parents = {r.info.run_id: r.info.run_name for r in found if r.data.tags.get("role") == "parent"}
    children = [r for r in found if r.info.run_id not in parents]
    # Every training run is the child of its DVC experiment's parent run, where the report logs the answer.
    assert all(parents.get(r.data.tags.get("mlflow.parentRunId")) == f"captcha ({r.data.tags['dvc_experiment']})"
               for r in children), (parents, [r.data.tags for r in children])
    return client, children


def test_random_init_then_nothing_to_do_then_weights_file(repo):
    root, _ = repo
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()

    # 1. From random initialisation, as a DVC experiment: the whole pipeline runs.
    out = dvc(repo, "exp", "run", "-S", "weights=none", "--name", "random-init", CAPTCHA)
    for stage in ("generate_captcha", "validate@captcha", "weights@captcha", "train@captcha", "evaluate@captcha"):
        assert f"'{stage}'" in out, f"stage {stage} did not run:\n{out[-3000:]}"
    metrics = json.loads((root / "reports/runs/captcha/none-s42/metrics.json").read_text())
    test = metrics["test"]
    arms = json.loads((root / "reports/captcha/metrics.json").read_text())["captcha"]
    assert set(arms) == {"none"}
    assert arms["none"]["test_accuracy"] == pytest.approx(test["accuracy"], abs=1e-4)
    assert test["n"] == TINY["test"] and metrics["epochs"] == 1
    assert 0 <= test["sequence_accuracy"] <= test["accuracy"] <= 1 and test["loss"] > 0
    assert set(test["position_accuracy"]) == {f"head{i}" for i in range(6)}
    assert metrics["setting"] == "random" and metrics["weights"] == "none"
    assert metrics["loss_definition"].startswith("sum over 6 heads of sparse categorical cross-entropy")
    import numpy as np

    with np.load(root / "reports/runs/captcha/none-s42/predictions.npz") as saved:
        assert saved["target"].shape == saved["predicted"].shape == (TINY["test"], 6)
        assert np.mean(saved["target"] == saved["predicted"]) == pytest.approx(test["accuracy"])
    history = (root / "reports/runs/captcha/none-s42/history.csv").read_text().splitlines()
    assert "seconds" in history[0].split(",") and len(history) == 2
    shown = json.loads(dvc(repo, "metrics", "show", "--json", stdout_only=True))
    assert "reports/captcha/metrics.json" in json.dumps(shown)
    assert (root / "reports/runs/captcha/none-s42/learning_curves.png").stat().st_size > 1000

    client, runs = mlflow_runs(root)
    assert len(runs) == 1
    first = runs[0]
    assert first.info.run_name == "random s42" and first.info.status == "FINISHED"
    assert first.data.params["weights"] == "none"
    assert first.data.params["experiment.epochs"] == "1" and first.data.params["captcha.train"] == "32"
    assert first.data.tags["git_commit"] == head and first.data.tags["dvc_experiment"] == "random-init"
    assert first.data.metrics["test.accuracy"] == pytest.approx(test["accuracy"])
    assert first.data.metrics["test.sequence_accuracy"] == pytest.approx(test["sequence_accuracy"])
    epochs = client.get_metric_history(first.info.run_id, "val_accuracy")
    assert [m.step for m in epochs] == [1]
    assert {"model.keras", "history.csv", "learning_curves.png", "metrics.json"} <= {
        a.path for a in client.list_artifacts(first.info.run_id)}

    # 2. Nothing changed: nothing to do.
    assert "up to date" in dvc(repo, "repro", CAPTCHA).lower()

    # 3. From a weights file the test saved (the small CNN's base at the CAPTCHA size).
    from transferbench.models.backbones import build_core

    build_core("cnn", (80, 160, 3)).save_weights(root / "start.weights.h5")
    out = dvc(repo, "exp", "run", "-S", "weights=start.weights.h5", "--name", "from-file", CAPTCHA)
    assert "'generate_captcha'" not in out or "didn't change" in out, "data must not be regenerated"
    source = json.loads((root / "models/captcha/init/file-start.weights.h5/source.json").read_text())
    assert source["weights"] == "start.weights.h5" and source["file"] == "weights.weights.h5"
    _, runs = mlflow_runs(root)
    assert len(runs) == 3, "a pretrained source trains fine-tuned and as fixed features (fixed_features: true)"
    second, third = runs[1], runs[2]
    assert (second.info.run_name, third.info.run_name) == ("fine-tuned s42", "fixed s42")
    assert (second.data.tags["setting"], third.data.tags["setting"]) == ("fine_tuned", "fixed_features")
    assert first.data.tags["setting"] == "random"
    assert second.data.params["weights"] == third.data.params["weights"] == "start.weights.h5"
    assert second.data.tags["dvc_experiment"] == "from-file"
    assert "test.accuracy" in second.data.metrics and "test.accuracy" in third.data.metrics
    assert sorted(p.name for p in (root / "models/captcha/init").iterdir()) == ["file-start.weights.h5"]

    # 4. `dvc exp show` puts the two experiments side by side: their metrics travel in their commits.
    import csv
    import io

    table = list(csv.DictReader(io.StringIO(dvc(repo, "exp", "show", "--csv", stdout_only=True))))
    by_name = {row["Experiment"]: row for row in table if row.get("Experiment")}
    assert float(by_name["random-init"]["captcha.none.test_accuracy"]) == pytest.approx(test["accuracy"], abs=1e-4)
    assert by_name["from-file"]["captcha.file-start.weights.h5.test_accuracy"] not in ("", "-")
    assert by_name["from-file"]["captcha.file-start.weights.h5-fixed.test_accuracy"] not in ("", "-")

    # 5. `--temp` runs in a copy under .dvc/tmp/exps: its MLflow run still lands in this repository's store.
    dvc(repo, "exp", "run", "--temp", "-S", "weights=none", "-S", "experiments.captcha.learning_rate=0.002",
        "--name", "in-a-copy", CAPTCHA)
    _, runs = mlflow_runs(root)
    temp = [r for r in runs if r.data.tags.get("dvc_experiment") == "in-a-copy"]
    assert len(temp) == 1 and temp[0].info.status == "FINISHED"
    assert temp[0].data.params["experiment.learning_rate"] == "0.002" and "test.accuracy" in temp[0].data.metrics
    assert not list((root / ".dvc" / "tmp").rglob("mlflow.db")), "a store inside DVC's copy is lost with it"
