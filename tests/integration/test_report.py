"""The report stage on hand-made runs: numbers, stability, figures, README, summary.json, MLflow, bad input.

Three experiments: two with both arms and two seeds (pets: single-output with confusion matrices;
captcha: six heads, per-character and whole-CAPTCHA accuracy), one `cnn` experiment with only the
random arm and one seed missing; a fourth experiment has no run folder at all.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.report_runs import markdown_tables, write_run
from transferbench.core import paths
from transferbench.reporting import report
from transferbench.reporting.mlflow_log import log_figures
from transferbench.reporting.read import ReportError
from transferbench.reporting.stability import STABILITY_DEFINITION, epochs_to_stability
from transferbench.study.params import Params, check_params

# Validation accuracy per epoch, and the epoch from which each stays within 0.02 of its best.
PETS_VAL = {
    ("imagenet", 42): ([0.80, 0.90, 0.95, 0.945, 0.96, 0.955], 3),  # best 0.96, floor 0.94: below at epochs 1-2
    ("imagenet", 43): ([0.85, 0.95, 0.92, 0.955, 0.96, 0.96], 4),  # dips to 0.92 at epoch 3
    # A last epoch just under the best: a run whose best epoch is its last is "still improving", not stable.
    ("none", 42): ([0.30, 0.50, 0.70, 0.80, 0.85, 0.86, 0.855], 5),  # floor 0.84
    ("none", 43): ([0.30, 0.50, 0.70, 0.84, 0.80, 0.88, 0.875], 6),  # floor 0.86: 0.80 at epoch 5
}
PETS_TEST = {("imagenet", 42): (0.95, 0.20), ("imagenet", 43): (0.97, 0.10),
             ("none", 42): (0.90, 0.40), ("none", 43): (0.92, 0.30)}
CAPTCHA_TEST = {("imagenet", 42): (0.99, 0.96), ("imagenet", 43): (0.99, 0.94),
                ("none", 42): (0.95, 0.70), ("none", 43): (0.93, 0.66)}  # (per character, whole CAPTCHA)
CLASSES = ["bird", "cat", "dog"]


def make_params() -> Params:
    """The repository's params with the four experiments above, two seeds each."""
    params = yaml.safe_load(paths.PARAMS.read_text(encoding="utf-8"))
    planned = params["experiments"]
    params.update(weights=["imagenet", "none"], fixed_features=False, seed=42, seeds=2, experiments={
        "pets": planned["pets"], "captcha": planned["captcha"],
        "small": {**planned["cats_and_dogs_filtered_cnn"], "weights": "none"},
        "absent": {**planned["pets"], "model": "vgg16"},
    })
    return check_params(params)


def confusion_table(right: int) -> pd.DataFrame:
    counts = [[right, 10 - right, 0], [0, right, 10 - right], [10 - right, 0, right]]
    return pd.DataFrame(counts, index=pd.Index(CLASSES, name="true"), columns=CLASSES)


def write_all(root: Path, run_ids: dict | None = None) -> Path:
    run_ids = run_ids or {}
    for (weights, seed), (val, _) in PETS_VAL.items():
        acc, loss = PETS_TEST[weights, seed]
        write_run(root, "pets", weights, seed, val, {"accuracy": acc, "loss": loss},
                  confusion_table(9 if weights == "imagenet" else 7), run_ids.get(("pets", weights, seed)))
    for (weights, seed), (char, whole) in CAPTCHA_TEST.items():
        write_run(root, "captcha", weights, seed, [0.5, char, char], {
            "accuracy": char, "loss": 1 - char, "sequence_accuracy": whole,
            "position_accuracy": {f"head{i}": char for i in range(6)}})
    write_run(root, "small", "none", 42, [0.6, 0.7, 0.72], {"accuracy": 0.71, "loss": 0.9})  # s43 is missing
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = write_all(tmp_path_factory.mktemp("reports"))
    return root, report.build(make_params(), root)


# ---- epochs to stability ------------------------------------------------------------------------

@pytest.mark.parametrize("key", sorted(PETS_VAL))
def test_stability_on_hand_made_curves(key):
    val, expected = PETS_VAL[key]
    assert epochs_to_stability(list(range(1, len(val) + 1)), val) == expected


@pytest.mark.parametrize("val", [[0.5, 0.9, 0.85], [0.60, 0.70, 0.74, 0.72, 0.715]])
def test_a_run_whose_last_epoch_falls_below_the_band_is_not_stable(val):
    """An overfitting run (the second curve is reference study 002's shape) ends more than 0.02 under its best."""
    assert epochs_to_stability(list(range(1, len(val) + 1)), val) is None


def test_the_report_says_which_runs_never_stabilised(tmp_path):
    """A normal overfitting curve must not crash the report; it is counted, not averaged in."""
    root = write_all(tmp_path / "reports")
    shutil.rmtree(root / "runs" / "pets" / "none-s43")
    write_run(root, "pets", "none", 43, [0.60, 0.70, 0.74, 0.72, 0.715], {"accuracy": 0.7, "loss": 0.9})
    pets = report.build(make_params(), root).summary["experiments"]["pets"]
    assert pets["results"]["none"]["epochs_to_stability"] == {"mean": 5.0, "std": None, "n": 1, "low": None,
                                                                  "high": None, "not_stable": 1,
                                                                  "still_improving": 0, "did_not_learn": 0}
    assert pets["difference"]["imagenet - none"]["epochs_to_stability"] == pytest.approx(3.5 - 5.0)
    page = (root / "README.md").read_text()
    assert "5 (1 of 2 runs not stable)" in page
    assert (root / "figures" / "pets-curves.png").is_file()


def test_an_arm_with_no_stable_run_says_so_and_gets_no_stability_difference(tmp_path):
    """No pretrained-minus-random stability is made up from runs that never settled."""
    root = write_all(tmp_path / "reports")
    for seed in (42, 43):
        shutil.rmtree(root / "runs" / "pets" / f"none-s{seed}")
        write_run(root, "pets", "none", seed, [0.5, 0.9, 0.85], {"accuracy": 0.7, "loss": 0.9})
    pets = report.build(make_params(), root).summary["experiments"]["pets"]
    assert pets["results"]["none"]["epochs_to_stability"] == {"mean": None, "std": None, "n": 0, "low": None,
                                                                   "high": None, "not_stable": 2,
                                                                   "still_improving": 0, "did_not_learn": 0}
    assert "epochs_to_stability" not in pets["difference"]["imagenet - none"]
    assert "test_accuracy" in pets["difference"]["imagenet - none"]
    assert "not stable (2 runs)" in (root / "README.md").read_text()


def test_stability_edge_cases():
    assert epochs_to_stability([1, 2, 3], [0.9, 0.9, 0.9]) == 1  # flat from the start
    assert epochs_to_stability([1, 2, 3, 4], [0.5, 0.6, 0.7, 0.9]) == 4  # still rising at the end
    assert epochs_to_stability([3, 4, 5], [0.5, 0.9, 0.89]) == 4  # epochs as recorded, not positions
    # Reference study 000's shape: random initialisation climbs for longer, then both hold.
    pretrained = [0.90] + [0.95] * 7 + [0.96] * 22
    random = [0.3 + 0.04 * e for e in range(16)] + [0.93] * 14
    assert epochs_to_stability(range(1, 31), pretrained) == 2
    assert epochs_to_stability(range(1, 31), random) == 17
    with pytest.raises(ValueError):
        epochs_to_stability([1, 2], [0.5])


# ---- numbers ------------------------------------------------------------------------------------

def test_means_stds_and_differences(built):
    _, result = built
    pets = result.summary["experiments"]["pets"]
    imagenet, none = pets["results"]["imagenet"], pets["results"]["none"]
    assert imagenet["n"] == 2 and imagenet["seeds"] == [42, 43]
    assert imagenet["test_accuracy"]["mean"] == pytest.approx(0.96)
    assert imagenet["test_accuracy"]["std"] == pytest.approx(0.014142, abs=1e-6)
    assert none["test_accuracy"]["mean"] == pytest.approx(0.91)
    assert imagenet["test_loss"]["mean"] == pytest.approx(0.15) and none["test_loss"]["mean"] == pytest.approx(0.35)
    # Two seeds: t(0.975, 1) = 12.706, so the interval is 3.5 +- 12.706 * 0.7071 / sqrt(2), clipped at 0 epochs.
    assert imagenet["epochs_to_stability"] == {"mean": 3.5, "std": pytest.approx(0.707107, abs=1e-6), "n": 2,
                                               "low": 0.0, "high": pytest.approx(3.5 + 6.353, abs=1e-3),
                                               "not_stable": 0, "still_improving": 0, "did_not_learn": 0}
    assert none["epochs_to_stability"]["mean"] == 5.5
    assert imagenet["best_val_accuracy"]["mean"] == pytest.approx(0.96)
    assert imagenet["seconds"]["mean"] == pytest.approx(142.5)
    # No per_class_accuracy in these older metrics.json: per class from the confusion matrix (9 of 10 right).
    assert pets["per_class"] == {"kind": "class", "arms": {"imagenet": dict.fromkeys(CLASSES, 0.9),
                                                           "none": dict.fromkeys(CLASSES, 0.7)}}
    diff = pets["difference"]["imagenet - none"]
    assert diff["test_accuracy"] == pytest.approx(0.05)
    assert diff["test_loss"] == pytest.approx(-0.2)
    assert diff["epochs_to_stability"] == pytest.approx(-2)
    captcha = result.summary["experiments"]["captcha"]
    assert captcha["results"]["none"]["test_sequence_accuracy"]["mean"] == pytest.approx(0.68)
    assert captcha["difference"]["imagenet - none"]["test_sequence_accuracy"] == pytest.approx(0.27)
    assert captcha["difference"]["imagenet - none"]["test_accuracy"] == pytest.approx(0.05)


def test_single_arm_and_missing_runs_are_reported_not_invented(built):
    _, result = built
    small = result.summary["experiments"]["small"]
    assert small["arms"] == ["none"] and small["difference"] == {}
    assert "imagenet" not in small["results"]
    assert "cnn has no ImageNet weights" in small["no_result"]["pretrained"]
    assert small["results"]["none"]["n"] == 1 and small["results"]["none"]["test_accuracy"]["std"] is None
    assert [m["run"] for m in small["missing"]] == ["none-s43"]
    absent = result.summary["experiments"]["absent"]
    assert [m["run"] for m in absent["missing"]] == ["imagenet-s42", "imagenet-s43", "none-s42", "none-s43"]
    assert all("no run folder" in m["reason"] for m in absent["missing"])
    assert absent["no_result"] == {"pretrained": "every imagenet run is missing (listed below)",
                                   "random": "every none run is missing (listed below)"}
    assert {(m["experiment"], m["run"]) for m in result.summary["missing"]} == {
        ("small", "none-s43"), *(("absent", r) for r in ("imagenet-s42", "imagenet-s43", "none-s42", "none-s43"))}


def test_summary_json_is_sorted_and_has_the_overall_table(built):
    root, _ = built
    text = (root / "summary.json").read_text()
    summary = json.loads(text)
    assert text == json.dumps(summary, indent=2, sort_keys=True) + "\n"
    overall = {row["experiment"]: row for row in summary["overall"]}
    assert overall["pets"]["difference"]["test_accuracy"] == pytest.approx(0.05)
    assert overall["pets"]["pretrained"]["test_accuracy"]["mean"] == pytest.approx(0.96)
    assert overall["small"]["pretrained"]["n"] == 0
    assert "no ImageNet weights" in overall["small"]["pretrained"]["no_result"]
    assert summary["definitions"]["stability_tolerance"] == 0.02
    published = summary["experiments"]["pets"]["published"]
    assert {(f["weights"], f["metric"]): f["values"] for f in published["figures"]}[
        "none", "epochs_to_stability"] == [17]
    assert summary["figures"]["pets"] == {"confusion matrices": "figures/pets-confusion.png",
                                          "learning curves": "figures/pets-curves.png"}
    # No confusion matrix for six heads.
    assert summary["figures"]["captcha"] == {"learning curves": "figures/captcha-curves.png"}


def test_readme_answers_with_published_figures_and_definitions(built):
    root, _ = built
    text = (root / "README.md").read_text()
    assert STABILITY_DEFINITION in text
    for figure in ("0.9596", "0.1184", "0.9366", "0.2408", "0.9982", "0.0479", "0.9496", "0.4323"):
        assert figure in text, figure
    rows = [row for table in markdown_tables(text) for row in table]
    # Intervals clipped to their valid range: epochs >= 0, accuracies <= 1.
    assert ["epochs to stability", "fine-tuned (imagenet)", "8", "3.5 [0, 9.9]"] in [r[:4] for r in rows]
    assert ["test accuracy", "0.9600 [0.8329, 1.0000]", "0.9100 [0.7829, 1.0000]", "+0.0500"] in rows
    assert ["test accuracy, per character", "0.9900 [0.9900, 0.9900]", "0.9400 [0.8129, 1.0000]", "+0.0500"] in rows
    assert ["test accuracy, whole CAPTCHA (all 6 characters right)", "0.9500 [0.8229, 1.0000]",
            "0.6800 [0.4259, 0.9341]", "+0.2700"] in rows
    assert "most likely per character" in text
    assert "**No pretrained run:** params.yaml trains cnn from random initialisation only" in text
    assert ["small", "`none-s43`"] in [r[:2] for r in rows] and ["absent", "`imagenet-s42`"] in [r[:2] for r in rows]
    assert "![pets: learning curves](figures/pets-curves.png)" in text
    assert "![pets: confusion matrices](figures/pets-confusion.png)" in text
    # Published figures are keyed by experiment: `small` is not reference study 002's experiment, whatever its dataset.
    assert "0.7120" not in text and "reference study 002" not in text



def test_readme_tables_are_well_formed(built):
    root, _ = built
    found = markdown_tables((root / "README.md").read_text())
    # the answer, overall, missing runs, then per experiment: results, what each arm was given, the
    # reference study's figures, time to accuracy, per class (pets) or position (captcha); only the budget for `absent`
    assert [table[0][0] for table in found] == ["experiment", "experiment", "experiment",
                                                "", "arm", "reference study's figure", "arm", "class",
                                                "", "arm", "reference study's figure", "arm", "position",
                                                "", "arm", "arm"]
    for table in found:
        assert {len(row) for row in table} == {len(table[0])}, table[0]  # a stray '|' in a cell would add one
    overall = found[1]
    assert [row[0] for row in overall[1:]] == ["[pets](#pets)", "[captcha](#captcha)", "[small](#small)",
                                               "[absent](#absent)"]
    assert overall[1][2:5] == ["0.9600 [0.8329, 1.0000]", "0.9100 [0.7829, 1.0000]", "+0.0500"]


def test_curves_csv_long_format(built):
    root, _ = built
    curves = pd.read_csv(root / "curves.csv")
    assert list(curves.columns) == ["experiment", "weights", "seed", "split", "epoch", "accuracy", "loss"]
    pets = curves[(curves.experiment == "pets") & (curves.weights == "none") & (curves.seed == 43)]
    assert pets[pets.split == "validation"]["accuracy"].tolist() == PETS_VAL["none", 43][0]
    assert set(curves.split) == {"train", "validation"}
    assert len(curves) == 2 * (2 * 6 + 2 * 7 + 4 * 3 + 3)


def test_figures_exist_and_are_byte_identical_across_runs(built, tmp_path):
    root, _ = built
    again = tmp_path / "again"
    shutil.copytree(root, again)
    for name in ("README.md", "summary.json", "curves.csv", "figures/pets-curves.png", "figures/pets-confusion.png"):
        (again / name).unlink()
    report.build(make_params(), again)
    for name in ("figures/pets-curves.png", "figures/pets-confusion.png", "figures/captcha-curves.png",
                 "figures/small-curves.png"):
        first = (root / name).read_bytes()
        assert first.startswith(b"\x89PNG") and len(first) > 10_000, name
        assert (again / name).read_bytes() == first, name
    for name in ("README.md", "summary.json", "curves.csv"):
        assert (again / name).read_bytes() == (root / name).read_bytes(), name
    assert not (root / "figures" / "absent-curves.png").exists()


# ---- bad input ----------------------------------------------------------------------------------

def test_history_without_a_column_names_file_and_column(tmp_path):
    folder = write_run(tmp_path, "pets", "imagenet", 42, [0.5, 0.6], {"accuracy": 0.5, "loss": 1.0})
    history = pd.read_csv(folder / "history.csv").drop(columns="val_loss")
    history.to_csv(folder / "history.csv", index=False)
    with pytest.raises(ReportError, match=r"imagenet-s42/history.csv: no column 'val_loss'"):
        report.build(make_params(), tmp_path)


def test_history_with_text_in_a_number_column(tmp_path):
    folder = write_run(tmp_path, "pets", "imagenet", 42, [0.5, 0.6], {"accuracy": 0.5, "loss": 1.0})
    text = (folder / "history.csv").read_text().replace("0.6,", "n/a,", 1)
    (folder / "history.csv").write_text(text)
    with pytest.raises(ReportError, match=r"history.csv: column 'val_accuracy' has 'n/a' at data row 2"):
        report.build(make_params(), tmp_path)


def test_metrics_without_a_key(tmp_path):
    write_run(tmp_path, "pets", "none", 43, [0.5, 0.6], {"accuracy": 0.5})
    with pytest.raises(ReportError, match=r"none-s43/metrics.json: no key 'test.loss'"):
        report.build(make_params(), tmp_path)


def test_nothing_trained_yet_is_all_missing(tmp_path):
    result = report.build(make_params(), tmp_path)
    assert len(result.summary["missing"]) == 4 + 4 + 4 + 2
    text = (tmp_path / "README.md").read_text()
    assert "Missing runs (14)" in text
    assert (tmp_path / "curves.csv").read_text().startswith("experiment,weights,seed,split,epoch,accuracy,loss")


# ---- MLflow -------------------------------------------------------------------------------------

def test_figures_logged_to_known_runs_and_unknown_ids_warned(tmp_path, monkeypatch, mlflow_db):
    from mlflow import MlflowClient

    uri = f"sqlite:///{mlflow_db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("pets", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment_id).info.run_id
    client.set_terminated(run_id)  # evaluation has finished the run before the report logs to it
    root = write_all(tmp_path / "reports", {("pets", "imagenet", 42): run_id, ("pets", "none", 42): "f" * 32})
    warnings = log_figures(report.build(make_params(), root))
    assert sorted(a.path for a in client.list_artifacts(run_id, "report")) == [
        "report/confusion.png", "report/pets-curves.png"]
    logged = client.download_artifacts(run_id, "report/pets-curves.png", str(tmp_path / "download"))
    assert Path(logged).read_bytes() == (root / "figures" / "pets-curves.png").read_bytes()
    assert any(f"run {'f' * 32} not found" in w for w in warnings), warnings
    assert any("captcha/imagenet-s42: no mlflow_run_id" in w for w in warnings), warnings


def test_unreachable_mlflow_warns_and_the_report_stands(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    root = write_all(tmp_path, {("pets", "imagenet", 42): "a" * 32})
    warnings = log_figures(report.build(make_params(), root))
    assert any("unreachable" in w and str(port) in w for w in warnings), warnings
    assert (root / "README.md").is_file()
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # restored after the call
