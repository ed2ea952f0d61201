"""The verdict as the report gives it, on hand-made runs: one seed, seeds that disagree, Holm over several
experiments, curve labels, balanced accuracy for a class-weighted experiment, clipped intervals.

Binary experiments of 200 test images (cats_and_dogs_filtered: 500 validation images, so chance is 0.5 and
the margin 2 x sqrt(0.25 / 500) = 0.045); every run's errors are the first ``errors`` images from ``offset``.
Summary numbers are rounded to 6 decimals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.report_runs import markdown_tables, write_run
from transferbench.core import paths
from transferbench.reporting import report
from transferbench.reporting.stability import CHANCE_DEFINITION
from transferbench.study.params import Params, check_params

TARGET = np.arange(200) % 2
CURVE = [0.6, 0.8, 0.79]  # peaks before its last epoch, well above chance: no label


def make_params(names: list[str], seeds: int) -> Params:
    params = yaml.safe_load(paths.PARAMS.read_text(encoding="utf-8"))
    params.update(weights=["imagenet", "none"], fixed_features=False, seed=42, seeds=seeds, train_fraction=[1.0],
                  experiments={name: params["experiments"][name] for name in names})
    return check_params(params)


def predicted(errors: int, offset: int = 7, target: np.ndarray = TARGET) -> np.ndarray:
    guess = target.copy()
    where = (np.arange(errors) + offset) % len(target)
    guess[where] = 1 - guess[where]
    return guess


def write_arm(root: Path, experiment: str, arm: str, errors: tuple[int, ...], curves: list | None = None,
              offset: int = 7) -> None:
    for i, count in enumerate(errors):
        guess = predicted(count, offset)
        write_run(root, experiment, arm, 42 + i, (curves or [CURVE] * len(errors))[i],
                  {"accuracy": float((guess == TARGET).mean()), "loss": 0.3}, predictions=(TARGET, guess))


def first_table(root: Path) -> dict[tuple[str, str], dict[str, str]]:
    table = markdown_tables((root / "README.md").read_text())[0]
    return {(row[0], row[1]): dict(zip(table[0], row, strict=True)) for row in table[1:]}


VERDICT = "did pretraining help?"


def test_one_seed_gives_no_verdict_but_the_images_only_interval(tmp_path):
    write_arm(tmp_path, "cats_and_dogs_filtered", "imagenet", (5,))
    write_arm(tmp_path, "cats_and_dogs_filtered", "none", (60,))
    report.build(make_params(["cats_and_dogs_filtered"], 1), tmp_path)
    row = first_table(tmp_path)["cats_and_dogs_filtered", "fine-tuned (imagenet)"]
    assert row[VERDICT] == "one run: no verdict on training chance"
    assert row["pretrained − random, points [95% interval over seeds and test images]"].endswith(
        "(test images only)")
    assert "yes" not in row[VERDICT]


@pytest.mark.parametrize(("errors", "verdict"), [((0, 0, 80), "not shown"), ((26, 27, 27), "yes")])
def test_seeds_that_disagree_leave_the_answer_not_shown(tmp_path, errors, verdict):
    """The same mean and the same test images: only how far apart the pretrained seeds are differs."""
    write_arm(tmp_path, "cats_and_dogs_filtered", "imagenet", errors)
    write_arm(tmp_path, "cats_and_dogs_filtered", "none", (40, 40, 40))
    result = report.build(make_params(["cats_and_dogs_filtered"], 3), tmp_path)
    comparison = result.summary["experiments"]["cats_and_dogs_filtered"]["comparisons"]["imagenet"]
    assert comparison["difference"] == pytest.approx(40 / 200 - sum(errors) / 600, abs=1e-6)
    assert comparison["images_only"]["low"] > 0  # the test images alone would say yes either way
    assert first_table(tmp_path)["cats_and_dogs_filtered", "fine-tuned (imagenet)"][VERDICT].startswith(verdict)


def test_holm_over_the_reports_verdicts_turns_a_borderline_yes(tmp_path):
    """Two experiments, each p about 0.036: alone each is a yes; together Holm doubles the smaller p."""
    for name, (mine, random) in {"cats_and_dogs_filtered": (10, 22), "dogs_vs_cats": (8, 19)}.items():
        write_arm(tmp_path, name, "imagenet", (mine,) * 3, offset=100)  # seeds agree: the images decide
        write_arm(tmp_path, name, "none", (random,) * 3, offset=0)
    alone = report.build(make_params(["cats_and_dogs_filtered"], 3), tmp_path)
    comparison = alone.summary["experiments"]["cats_and_dogs_filtered"]["comparisons"]["imagenet"]
    assert 0.025 < comparison["p_value"] < 0.05 and comparison["p_holm"] == comparison["p_value"]
    assert first_table(tmp_path)["cats_and_dogs_filtered", "fine-tuned (imagenet)"][VERDICT].startswith("yes")
    both = report.build(make_params(["cats_and_dogs_filtered", "dogs_vs_cats"], 3), tmp_path)
    assert both.summary["definitions"]["holm_family_size"] == 2
    rows = first_table(tmp_path)
    for key in (("cats_and_dogs_filtered", "fine-tuned (imagenet)"), ("dogs_vs_cats", "fixed features (imagenet)")):
        assert rows[key][VERDICT].startswith("not shown (Holm-adjusted p = "), rows[key]
    assert both.summary["experiments"]["cats_and_dogs_filtered"]["comparisons"]["imagenet"]["p_value"] == (
        comparison["p_value"])


def test_still_improving_and_chance_level_runs_are_labelled_and_left_out_of_stability(tmp_path):
    write_arm(tmp_path, "cats_and_dogs_filtered", "imagenet", (10, 10, 10))
    # chance + margin = 0.545: 0.54 did not learn; a best epoch that is the last is still improving.
    write_arm(tmp_path, "cats_and_dogs_filtered", "none", (40, 40, 40),
              curves=[[0.50, 0.54, 0.52], [0.6, 0.7, 0.8], [0.6, 0.8, 0.79]])
    result = report.build(make_params(["cats_and_dogs_filtered"], 3), tmp_path)
    none = result.summary["experiments"]["cats_and_dogs_filtered"]["results"]["none"]
    assert none["labels"] == {"none-s42": "did not learn", "none-s43": "still improving"}
    assert none["epochs_to_stability"] == {"mean": 2.0, "std": None, "n": 1, "low": None, "high": None,
                                           "not_stable": 0, "still_improving": 1, "did_not_learn": 1}
    assert result.summary["experiments"]["cats_and_dogs_filtered"]["task"]["chance_margin"] == pytest.approx(
        2 * (0.25 / 500) ** 0.5, abs=1e-6)
    rows = {row[0]: row for table in markdown_tables((tmp_path / "README.md").read_text()) for row in table}
    assert rows["epochs to stability"][2] == "2 (1 of 3 runs still improving, 1 did not learn)"
    assert rows["curve labels (not in epochs to stability)"][1:3] == ["none", "1 still improving, 1 did not learn"]
    assert CHANCE_DEFINITION in (tmp_path / "README.md").read_text()


def test_pets_verdicts_use_balanced_accuracy(tmp_path):
    """pets trains with balanced class weights; its test set is imbalanced, so the two metrics part."""
    target = np.repeat([0, 1, 2], [30, 10, 10])
    for arm, wrong_rare in (("imagenet", 1), ("none", 6)):  # errors on class 1 only, the same for every seed
        guess = target.copy()
        guess[30:30 + wrong_rare] = 0
        for seed in (42, 43, 44):
            write_run(tmp_path, "pets", arm, seed, CURVE, {"accuracy": float((guess == target).mean()), "loss": 0.3},
                      predictions=(target, guess))
    result = report.build(make_params(["pets"], 3), tmp_path)
    pets = result.summary["experiments"]["pets"]
    assert pets["verdict_metric"] == "balanced_accuracy"
    # Recalls 1, 0.9, 1 and 1, 0.4, 1: balanced accuracy 0.9667 and 0.8; accuracy 0.98 and 0.88.
    assert pets["results"]["imagenet"]["test_balanced_accuracy"]["mean"] == pytest.approx((1 + 0.9 + 1) / 3, abs=1e-6)
    comparison = pets["comparisons"]["imagenet"]
    assert comparison["metric"] == "balanced_accuracy"
    assert comparison["difference"] == pytest.approx(0.5 / 3, abs=1e-6)
    assert comparison["also"]["accuracy"]["difference"] == pytest.approx(0.1, abs=1e-6)
    row = first_table(tmp_path)["pets", "fine-tuned (imagenet)"]
    assert row["test metric of the verdict"] == "balanced accuracy"
    assert row["pretrained [95% interval over seeds]"] == "0.9667 [0.9667, 0.9667]"


def test_extreme_runs_keep_accuracy_intervals_inside_0_1(tmp_path):
    for arm, accuracies in (("imagenet", (1.0, 1.0, 0.4)), ("none", (0.0, 0.0, 0.6))):
        for i, accuracy in enumerate(accuracies):
            write_run(tmp_path, "cats_and_dogs_filtered", arm, 42 + i, [0.0, 1.0, 1.0],
                      {"accuracy": accuracy, "loss": 0.1})
    result = report.build(make_params(["cats_and_dogs_filtered"], 3), tmp_path)
    for arm in ("imagenet", "none"):
        stat = result.summary["experiments"]["cats_and_dogs_filtered"]["results"][arm]["test_accuracy"]
        assert 0.0 <= stat["low"] <= stat["mean"] <= stat["high"] <= 1.0
    assert result.summary["experiments"]["cats_and_dogs_filtered"]["results"]["none"]["test_accuracy"]["low"] == 0
