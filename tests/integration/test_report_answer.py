"""The report's answer on fixture runs: three settings, one and three seeds, a never-stable curve, a missing
arm, an experiment without a published figure; every number recomputed here from the fixture's arrays.

pets: fine-tuned, fixed features and random, three seeds each, predictions saved (one fixed-features
seed never stabilises; random's runs predate the `setting` key and history's `seconds`).
captcha: fine-tuned with one seed (two missing), random with three; six positions per image.
cats_and_dogs_filtered_cnn: reference study 002's small CNN, random only, one seed, that study's overfitting
curve.
cats_and_dogs_filtered: Xception on the same data, fine-tuned only (the random arm's runs all missing),
no published figure. absent: nothing trained.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.report_runs import markdown_tables, write_run, wrong
from tests.stage_run import copy_code, run_stage
from transferbench.config.weights import Arm
from transferbench.core import paths
from transferbench.core.errors import BadInput
from transferbench.reporting import figures, report
from transferbench.reporting.settings import setting_of
from transferbench.study import experiments, runs
from transferbench.study.params import Params, check_params

ARMS = {"pets": ["imagenet", "imagenet-fixed", "none"], "captcha": ["imagenet", "none"],
        "cats_and_dogs_filtered_cnn": ["none"], "cats_and_dogs_filtered": ["imagenet", "none"],
        "absent": ["imagenet", "none"]}
SEEDS = (42, 43, 44)
SETTINGS = {"imagenet": "fine_tuned", "imagenet-fixed": "fixed_features", "none": None}  # none: an older run
PETS_CURVES = {"imagenet": [0.80, 0.90, 0.95, 0.945, 0.96, 0.955],
               "imagenet-fixed": [0.70, 0.80, 0.85, 0.88, 0.89, 0.90],
               "none": [0.30, 0.50, 0.70, 0.80, 0.85, 0.86]}
NEVER_STABLE = [0.70, 0.90, 0.85, 0.85, 0.85, 0.85]  # imagenet-fixed, seed 44: ends 0.05 under its best
PETS_ERRORS = {"imagenet": (3, 4, 2), "imagenet-fixed": (6, 8, 7), "none": (9, 12, 10)}  # of 60 images, per seed
CAPTCHA_ERRORS = {"imagenet": (10,), "none": (30, 35, 40)}  # wrong characters of 40 x 6
CLASSES = ["bird", "cat", "dog"]
LOSS_DEFINITIONS = {"imagenet": {"loss_definition": "categorical cross-entropy"},
                    "imagenet-fixed": {"loss_definition": "squared hinge + L2 penalty of the linear head"}}


def make_params() -> Params:
    params = yaml.safe_load(paths.PARAMS.read_text(encoding="utf-8"))
    planned = params["experiments"]
    params.update(weights=["imagenet", "none"], seed=42, seeds=3, experiments={
        "pets": planned["pets"], "captcha": planned["captcha"],
        "cats_and_dogs_filtered_cnn": planned["cats_and_dogs_filtered_cnn"],
        "cats_and_dogs_filtered": planned["cats_and_dogs_filtered"], "absent": {**planned["pets"], "model": "vgg16"}})
    return check_params(params)


def arms_as_planned(params: Params, name: str) -> list:
    """The arms each fixture experiment trains, the fixed-features one included, as training plans them."""
    base = experiments.resolve(params, name)
    return [dataclasses.replace(base, arm=Arm(label), setting=setting_of(label)) for label in ARMS[name]]


@pytest.fixture(autouse=True, scope="module")
def three_settings():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runs, "arm_experiments", arms_as_planned)
        yield



PETS_TARGET = np.random.default_rng(1).permutation(np.arange(60) % 3)
CAPTCHA_TARGET = np.random.default_rng(2).integers(0, 36, size=(40, 6))
FILTERED_TARGET = np.arange(50) % 2


def pets_predicted(arm: str, seed: int) -> np.ndarray:
    return wrong(PETS_TARGET, PETS_ERRORS[arm][SEEDS.index(seed)], (seed, len(arm)), 3)


def write_fixture(root: Path) -> Path:
    for arm, curve in PETS_CURVES.items():
        for seed in SEEDS:
            predicted = pets_predicted(arm, seed)
            correct = predicted == PETS_TARGET
            counts = pd.crosstab(pd.Categorical(PETS_TARGET, range(3)), pd.Categorical(predicted, range(3)),
                                 dropna=False).to_numpy()
            per_class = {c: float(correct[PETS_TARGET == i].mean()) for i, c in enumerate(CLASSES)}
            val = NEVER_STABLE if (arm, seed) == ("imagenet-fixed", 44) else curve
            write_run(root, "pets", arm, seed, val, {"accuracy": float(correct.mean()), "loss": 0.5},
                      pd.DataFrame(counts, index=pd.Index(CLASSES, name="true"), columns=CLASSES),
                      predictions=(PETS_TARGET, predicted), setting=SETTINGS[arm],
                      epoch_seconds=None if arm == "none" else 10.0 + seed - 42,
                      extra={"per_class_accuracy": per_class, **LOSS_DEFINITIONS.get(arm, {})})
    for arm, errors in CAPTCHA_ERRORS.items():
        for seed, count in zip(SEEDS, errors, strict=False):
            predicted = wrong(CAPTCHA_TARGET, count, (seed, len(arm)), 36)
            correct = predicted == CAPTCHA_TARGET
            write_run(root, "captcha", arm, seed, [0.5, 0.9, float(correct.mean())], {
                "accuracy": float(correct.mean()), "loss": 0.1, "sequence_accuracy": float(correct.all(1).mean()),
                "position_accuracy": {f"head{i}": float(correct[:, i].mean()) for i in range(6)}},
                predictions=(CAPTCHA_TARGET, predicted), setting=SETTINGS[arm])
    write_run(root, "cats_and_dogs_filtered_cnn", "none", 42, [0.60, 0.70, 0.74, 0.72, 0.715],
              {"accuracy": 0.71, "loss": 0.9})
    for seed in SEEDS:
        predicted = wrong(FILTERED_TARGET, 5, (seed,), 2)
        write_run(root, "cats_and_dogs_filtered", "imagenet", seed, [0.8, 0.9, 0.9],
                  {"accuracy": float((predicted == FILTERED_TARGET).mean()), "loss": 0.3},
                  predictions=(FILTERED_TARGET, predicted), setting="fine_tuned")
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = write_fixture(tmp_path_factory.mktemp("reports"))
    return root, report.build(make_params(), root)


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t interval, with the quantiles of a t table (df 2: 4.303)."""
    quantile = {1: 12.706, 2: 4.303}[len(values) - 1]
    mean, half = statistics.mean(values), quantile * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def bootstrap(target: np.ndarray, mine: list[np.ndarray], random: list[np.ndarray]) -> tuple[float, float, float]:
    """Paired bootstrap of the per-image correctness difference, written out directly (same seed, one draw)."""
    def per_image(predicted: list[np.ndarray]) -> np.ndarray:
        return np.mean([(p == target).reshape(len(target), -1).mean(axis=1) for p in predicted], axis=0)

    diff = per_image(mine) - per_image(random)
    index = np.random.default_rng(0).integers(0, len(diff), size=(10_000, len(diff)))
    low, high = np.percentile(diff[index].mean(axis=1), [2.5, 97.5])
    return float(diff.mean()), float(low), float(high)


def balanced(target: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes, written out."""
    return statistics.mean(float((predicted[target == c] == c).mean()) for c in np.unique(target))


def two_level(target: np.ndarray, mine: list[np.ndarray], random: list[np.ndarray],
              by_class: bool = False) -> tuple[float, float, float, float]:
    """The verdict's bootstrap written out (one chunk at these sizes): seeds drawn per arm, then images, paired;
    the difference, its interval and the two-sided p-value."""
    a = np.array([(p == target).astype(float) for p in mine])
    b = np.array([(p == target).astype(float) for p in random])
    rng, n = np.random.default_rng(0), len(target)
    weights_a = rng.multinomial(len(a), [1 / len(a)] * len(a), size=10_000) / len(a)
    weights_b = rng.multinomial(len(b), [1 / len(b)] * len(b), size=10_000) / len(b)
    index = rng.integers(0, n, size=(10_000, n), dtype=np.int32)
    per_image = weights_a @ a - weights_b @ b
    drawn = np.array([row[i].mean() if not by_class else
                      np.mean([row[i][target[i] == c].mean() for c in np.unique(target[i])])
                      for row, i in zip(per_image, index, strict=True)])
    low, high = np.percentile(drawn, [2.5, 97.5])
    diff = a.mean(0) - b.mean(0)
    point = np.mean([diff[target == c].mean() for c in np.unique(target)]) if by_class else diff.mean()
    p = min(1.0, max(1e-4, 2 * min(float(np.mean(drawn <= 0)), float(np.mean(drawn >= 0)))))
    return float(point), float(low), float(high), float(p)


def points(value: float) -> str:
    return f"{'+' if value > 0 else ''}{value * 100:.1f}"


# ---- the first table ----------------------------------------------------------------------------

def test_the_first_table_answers_per_experiment_and_setting(built):
    root, _ = built
    text = (root / "README.md").read_text()
    assert text.index("## The answer") < text.index("## Overall")
    first = markdown_tables(text)[0]
    assert first[0][:3] == ["experiment", "pretrained setting (arm)", "test metric of the verdict"]
    rows = {(row[0], row[1]): row[2:] for row in first[1:]}
    assert list(rows) == [("pets", "fine-tuned (imagenet)"), ("pets", "fixed features (imagenet-fixed)"),
                          ("captcha", "fine-tuned (imagenet)"), ("cats_and_dogs_filtered_cnn", "—"),
                          ("cats_and_dogs_filtered", "fine-tuned (imagenet)"), ("absent", "fine-tuned (imagenet)")]
    # pets trains with balanced class weights: its verdicts use balanced accuracy.
    random = [balanced(PETS_TARGET, pets_predicted("none", s)) for s in SEEDS]
    found = {}
    for arm in ("imagenet", "imagenet-fixed"):
        mine = [pets_predicted(arm, s) for s in SEEDS]
        mean, low, high = t_interval([balanced(PETS_TARGET, p) for p in mine])
        found[arm] = two_level(PETS_TARGET, mine, [pets_predicted("none", s) for s in SEEDS], by_class=True)
        diff, d_low, d_high, _ = found[arm]
        assert d_low < diff < d_high
        row = rows["pets", f"{'fine-tuned' if arm == 'imagenet' else 'fixed features'} ({arm})"]
        assert row[0] == "balanced accuracy"
        assert row[1] == f"{mean:.4f} [{low:.4f}, {min(high, 1):.4f}]"
        mean_r, low_r, high_r = t_interval(random)
        assert row[2] == f"{mean_r:.4f} [{low_r:.4f}, {high_r:.4f}]"
        assert row[3] == f"{points(diff)} [{points(d_low)}, {points(d_high)}]"
        assert row[5] == "reference study 000: imagenet: test accuracy 0.9596; none: test accuracy 0.9366"
    # The Holm family: pets' two comparisons (captcha's pretrained arm has one seed, the others no random arm).
    p_values = sorted((found[arm][3], arm) for arm in found)
    adjusted = {p_values[0][1]: 2 * p_values[0][0]}
    adjusted[p_values[1][1]] = max(adjusted[p_values[0][1]], p_values[1][0])
    for arm, p in adjusted.items():
        row = rows["pets", f"{'fine-tuned' if arm == 'imagenet' else 'fixed features'} ({arm})"]
        expected = "yes" if p < 0.05 and found[arm][1] > 0 else "not shown"
        assert row[4].startswith(expected + " (Holm-adjusted p = "), (arm, p, row[4])
    assert rows["pets", "fine-tuned (imagenet)"][4].startswith("yes")


def test_one_seed_is_said_so_and_the_bootstrap_still_pairs_images(built):
    root, result = built
    rows = {(r[0], r[1]): r[2:] for r in markdown_tables((root / "README.md").read_text())[0][1:]}
    captcha = rows["captcha", "fine-tuned (imagenet)"]
    mine = [wrong(CAPTCHA_TARGET, 10, (42, 8), 36)]
    assert captcha[0] == "accuracy per character"
    assert captcha[1] == f"{(mine[0] == CAPTCHA_TARGET).mean():.4f} (one seed, no interval)"
    random = [wrong(CAPTCHA_TARGET, n, (s, 4), 36) for s, n in zip(SEEDS, CAPTCHA_ERRORS["none"], strict=True)]
    diff, low, high = bootstrap(CAPTCHA_TARGET, mine, random)  # per character, averaged per image
    comparison = result.summary["experiments"]["captcha"]["comparisons"]["imagenet"]
    # One seed: no verdict, and the interval shown is the test images' alone, labelled so.
    images = comparison["images_only"]
    assert (comparison["difference"], images["low"], images["high"]) == pytest.approx((diff, low, high), abs=1e-6)
    assert comparison["n_images"] == 40 and comparison["resamples"] == 10_000 and comparison["seeds"] == [1, 3]
    assert captcha[3] == f"{points(diff)} [{points(low)}, {points(high)}] (test images only)"
    assert captcha[4] == "one run: no verdict on training chance"
    assert "p_holm" not in comparison
    whole = [float((p == CAPTCHA_TARGET).all(1).mean()) for p in (*mine, *random)]
    assert comparison["also"]["sequence_accuracy"]["difference"] == pytest.approx(
        whole[0] - statistics.mean(whole[1:]), abs=1e-6)  # whole CAPTCHAs get their paired interval too
    assert captcha[5] == ("reference study 000: imagenet: test accuracy 0.9982; none: test accuracy 0.9496")


def test_a_missing_arm_and_an_experiment_without_published_figures(built):
    root, result = built
    rows = {(r[0], r[1]): r[2:] for r in markdown_tables((root / "README.md").read_text())[0][1:]}
    filtered = rows["cats_and_dogs_filtered", "fine-tuned (imagenet)"]
    assert filtered[3] == "—" and filtered[4] == "not measured: no none run (every run is missing)"
    assert filtered[5] == "none published"  # reference study 002's small-CNN figures belong to the CNN experiment only
    cnn = rows["cats_and_dogs_filtered_cnn", "—"]
    assert cnn[2] == "0.7100 (one seed, no interval)"
    assert cnn[4].startswith("not measured: params.yaml trains cnn from random initialisation only")
    assert cnn[5] == ("reference study 002: none: validation accuracy, last epoch 0.7120 and 0.7250; "
                      "none: train accuracy, last epoch 0.9900")
    assert rows["absent", "fine-tuned (imagenet)"][4] == "not measured: no imagenet run (every run is missing)"
    summary = result.summary["experiments"]
    assert summary["cats_and_dogs_filtered"]["published"] is None
    assert summary["cats_and_dogs_filtered_cnn"]["results"]["none"]["epochs_to_stability"]["not_stable"] == 1


def test_settings_come_from_metrics_or_the_arm_label(built):
    _, result = built
    pets = result.summary["experiments"]["pets"]["results"]
    assert {arm: pets[arm]["setting"] for arm in ARMS["pets"]} == {
        "imagenet": "fine_tuned", "imagenet-fixed": "fixed_features", "none": "random"}
    assert pets["imagenet-fixed"]["epochs_to_stability"]["not_stable"] == 1


def test_a_different_test_set_is_bad_input_naming_both_files(tmp_path):
    root = write_fixture(tmp_path / "reports")
    folder = root / "runs" / "pets" / "none-s43"
    np.savez(folder / "predictions.npz", target=np.roll(PETS_TARGET, 1), predicted=PETS_TARGET)
    with pytest.raises(BadInput, match=r"pets/none-s43/predictions.npz and .*pets/imagenet-s42/predictions.npz: "
                                       r"different 'target' arrays"):
        report.build(make_params(), root)


def test_runs_without_predictions_give_the_difference_of_means_without_an_interval(tmp_path):
    root = write_fixture(tmp_path / "reports")
    (root / "runs" / "pets" / "none-s44" / "predictions.npz").unlink()
    result = report.build(make_params(), root)
    comparison = result.summary["experiments"]["pets"]["comparisons"]["imagenet"]
    assert comparison["low"] is None and comparison["no_predictions"] == ["none-s44"]
    # Balanced accuracy (pets' verdict metric): none-s44's from its metrics.json's per_class_accuracy.
    accuracy = {arm: statistics.mean(balanced(PETS_TARGET, pets_predicted(arm, s)) for s in SEEDS)
                for arm in ("imagenet", "none")}
    assert comparison["difference"] == pytest.approx(accuracy["imagenet"] - accuracy["none"], abs=1e-6)
    assert "not known: no per-image predictions" in (root / "README.md").read_text()


# ---- time to accuracy, per class, figures ---------------------------------------------------------

def test_time_to_accuracy_against_the_seed_and_the_other_arms(built):
    _, result = built
    times = result.summary["experiments"]["pets"]["time_to_accuracy"]
    reached = {arm: {e["target"]: e["reached"] for e in entries} for arm, entries in times.items()}
    # imagenet's mean curve reaches 0.9366 at epoch 3 and 0.9596 at epoch 5; its seeds took 10, 11, 12 s an epoch.
    assert reached["imagenet"]["reference study 000's imagenet test accuracy"] == {"epoch": 5, "seconds": 55.0}
    assert reached["imagenet"]["reference study 000's none test accuracy"] == {"epoch": 3, "seconds": 33.0}
    assert reached["imagenet"]["best validation accuracy of none"] == {"epoch": 2, "seconds": 22.0}
    assert reached["none"]["best validation accuracy of imagenet"] is None  # never gets there
    assert reached["none"]["best validation accuracy of imagenet-fixed"] is None
    # Best validation accuracy is each run's maximum averaged over seeds (0.90 for all three), not the maximum
    # of the mean curve (0.883, where the seeds peak at different epochs).
    assert times["imagenet"][2] == {"target": "best validation accuracy of imagenet-fixed",
                                    "accuracy": pytest.approx(0.90),
                                    "reached": {"epoch": 2, "seconds": 22.0}}
    # The fixed-features mean curve passes random's best (0.86) at epoch 4 (0.87): 4 x 11 s on average.
    assert reached["imagenet-fixed"]["best validation accuracy of none"] == {"epoch": 4, "seconds": 44.0}
    assert reached["none"]["reference study 000's none test accuracy"] is None
    cnn = result.summary["experiments"]["cats_and_dogs_filtered_cnn"]["time_to_accuracy"]["none"]
    assert cnn == [{"target": "reference study 002's none validation accuracy, last epoch", "accuracy": 0.7185,
                    "reached": {"epoch": 3, "seconds": None}}]


def test_time_to_accuracy_table_says_not_reached(built):
    root, _ = built
    rows = [r for t in markdown_tables((root / "README.md").read_text()) if t[0][0] == "arm" for r in t[1:]]
    assert ["random init (none)", "best validation accuracy of imagenet", "0.9600", "not reached"] in rows
    assert ["fine-tuned (imagenet)", "reference study 000's imagenet test accuracy", "0.9596",
            "epoch 5, 55.0 s"] in rows


def test_per_class_and_per_position_markdown_tables(built):
    root, result = built
    pets = result.summary["experiments"]["pets"]["per_class"]
    for arm in ARMS["pets"]:
        expected = {c: statistics.mean(float((pets_predicted(arm, s) == PETS_TARGET)[PETS_TARGET == i].mean())
                                       for s in SEEDS) for i, c in enumerate(CLASSES)}
        assert pets["arms"][arm] == pytest.approx(expected)
    captcha = result.summary["experiments"]["captcha"]["per_class"]
    assert captcha["kind"] == "position" and list(captcha["arms"]["none"]) == [f"head{i}" for i in range(6)]
    found = markdown_tables((root / "README.md").read_text())
    header = next(t[0] for t in found if t[0][0] == "class")
    assert header == ["class", "fine-tuned (imagenet)", "fixed features (imagenet-fixed)", "random init (none)"]
    assert "figures/pets-confusion.png" in (root / "README.md").read_text()


def test_the_curves_figure_draws_the_seeds_figures_as_lines(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(figures, "comparison_curves",
                        lambda frame, title, out, stability, references: drawn.setdefault(title.split(":")[0],
                                                                                          (frame, references)))
    report.build(make_params(), write_fixture(tmp_path / "reports"))
    frame, references = drawn["pets"]
    assert references == {"reference study 000 imagenet test accuracy": 0.9596,
                          "reference study 000 none test accuracy": 0.9366}
    assert list(dict.fromkeys(frame["weights"])) == ARMS["pets"]
    assert drawn["cats_and_dogs_filtered"][1] == {}


def test_curves_csv_has_every_arm_and_the_report_is_deterministic(built, tmp_path):
    root, _ = built
    curves = pd.read_csv(root / "curves.csv")
    assert list(dict.fromkeys(curves[curves.experiment == "pets"]["weights"])) == ARMS["pets"]
    again = tmp_path / "again"
    shutil.copytree(root / "runs", again / "runs")
    report.build(make_params(), again)
    for name in ("README.md", "summary.json", "curves.csv", "figures/pets-curves.png"):
        assert (again / name).read_bytes() == (root / name).read_bytes(), name


def test_loss_definitions_are_shown_per_arm(built):
    root, _ = built
    text = (root / "README.md").read_text()
    assert "- fixed features (imagenet-fixed): squared hinge + L2 penalty of the linear head" in text
    assert "- fine-tuned (imagenet): categorical cross-entropy" in text


def test_the_stage_prints_the_first_table(built, capsys):
    root, result = built
    report.print_answer(result.typed.experiments)
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("| experiment ")
    assert printed.strip() in (root / "README.md").read_text()


def test_the_report_stage_prints_the_answer_and_a_bad_test_set_is_one_line(tmp_path):
    """`python -m stages.report` on the repository's params with captcha's two arms trained (one seed)."""
    root = copy_code(tmp_path)
    predicted = {"imagenet": wrong(CAPTCHA_TARGET, 10, (1,), 36), "none": wrong(CAPTCHA_TARGET, 60, (2,), 36)}
    for arm, guess in predicted.items():
        test = {"accuracy": float((guess == CAPTCHA_TARGET).mean()), "loss": 0.1}
        write_run(root / "reports", "captcha", arm, 42, [0.5, 0.9], test, predictions=(CAPTCHA_TARGET, guess))
    result = run_stage(root, "report")
    assert result.returncode == 0, result.stderr
    diff, low, high = bootstrap(CAPTCHA_TARGET, [predicted["imagenet"]], [predicted["none"]])
    row = next(line for line in result.stdout.splitlines() if line.startswith("| captcha "))
    assert f"| {points(diff)} [{points(low)}, {points(high)}] " in row and "(one seed, no interval)" in row
    np.savez(root / "reports/runs/captcha/none-s42/predictions.npz", target=CAPTCHA_TARGET[::-1],
             predicted=predicted["none"])
    failed = run_stage(root, "report")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith("report: error: ")
    assert "different 'target' arrays" in failed.stderr


def test_published_figures_are_keyed_by_experiments_params_yaml_plans():
    from transferbench.reporting.reference_studies import PUBLISHED

    planned = yaml.safe_load(paths.PARAMS.read_text(encoding="utf-8"))["experiments"]
    assert set(PUBLISHED) <= set(planned)
    assert "cats_and_dogs_filtered" not in PUBLISHED  # Xception two-phase: no reference study published it
    assert planned["cats_and_dogs_filtered_cnn"]["model"] == "cnn"  # reference study 002's figures are the small CNN's


def test_a_model_changed_by_params_is_not_set_beside_the_seeds_figures(tmp_path):
    # `-S experiments.captcha.model=cnn` (the README's small run) keeps the name, not reference study 000's recipe.
    params = make_params()
    captcha = params.experiments["captcha"].model_copy(update={"model": "cnn", "pooling": "flatten"})
    params = params.model_copy(update={"experiments": {**params.experiments, "captcha": captcha}})
    root = write_fixture(tmp_path / "reports")
    summary = report.build(params, root).summary["experiments"]["captcha"]
    assert summary["published"] is None
    assert summary["published_not_comparable"] == ("reference study 000 trained xception on captcha, "
                                                   "this run cnn on captcha")
    readme = (root / "README.md").read_text()
    rows = {(r[0], r[1]): r[2:] for r in markdown_tables(readme)[0][1:]}
    assert rows["captcha", "fine-tuned (imagenet)"][5] == (
        "not comparable: reference study 000 trained xception on captcha, this run cnn on captcha")
    assert "0.9982" not in readme.split("## captcha")[1]


def test_each_seeds_figures_name_the_dataset_and_model_params_yaml_gives_that_experiment():
    from transferbench.reporting.reference_studies import PUBLISHED

    planned = yaml.safe_load(paths.PARAMS.read_text(encoding="utf-8"))["experiments"]
    for name, published in PUBLISHED.items():
        assert published.differs(planned[name]["dataset"], planned[name]["model"]) is None, name
