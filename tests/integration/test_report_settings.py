"""What params plan, as the report shows it: arm titles (a frozen recipe's own arm is fixed features), shares of
the training split (the answer across data sizes), each arm's budget, the CAPTCHA's length and style."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.report_runs import markdown_tables, write_run
from transferbench.core import paths
from transferbench.reporting import report
from transferbench.study.params import Params, Tuning, check_params


def test_a_frozen_recipes_own_arm_is_fixed_features_and_its_tuned_arm_fine_tuned(tmp_path):
    params = yaml.safe_load(paths.PARAMS.read_text(encoding="utf-8"))
    # dogs_vs_cats is reference study 003's recipe: its base frozen
    params.update(weights=["imagenet", "none"], seeds=1, fixed_features=True,
                  experiments={"dogs_vs_cats": params["experiments"]["dogs_vs_cats"]})
    target = np.arange(40) % 2
    for arm, errors in (("imagenet", 4), ("imagenet-tuned", 2), ("none", 12)):
        predicted = target.copy()
        predicted[:errors] = 1 - predicted[:errors]
        # No `setting` in metrics.json (as evaluated before it was recorded): the plan must say it.
        write_run(tmp_path, "dogs_vs_cats", arm, 42, [0.6, 0.8, 0.9], {"accuracy": 1 - errors / 40, "loss": 0.4},
                  predictions=(target, predicted))
    result = report.build(check_params(params), tmp_path)
    summary = result.summary["experiments"]["dogs_vs_cats"]
    assert summary["settings"] == {"imagenet": "fixed_features", "imagenet-tuned": "fine_tuned", "none": "random"}
    # the overall table keeps the reference study's own recipe, as published
    assert summary["pretrained_arm"] == "imagenet"
    first_table = (tmp_path / "README.md").read_text().split("## The answer")[1].split("\n\n")[1]
    assert "| fixed features (imagenet) " in first_table
    assert "| fine-tuned (imagenet-tuned) " in first_table
    assert "fine-tuned (imagenet) " not in first_table


def shares_params(fractions: list[float]) -> Params:
    params = yaml.safe_load(paths.PARAMS.read_text(encoding="utf-8"))
    params.update(weights=["imagenet", "none"], seeds=2, fixed_features=False, seed=42, train_fraction=fractions,
                  experiments={"cats_and_dogs_filtered": params["experiments"]["cats_and_dogs_filtered"]})
    return check_params(params)


# Errors of 40 test images per arm, share and seed; 2,000 training images at the whole split.
SHARE_ERRORS = {("imagenet", 0.5): (4, 6), ("imagenet", 1.0): (2, 3), ("none", 0.5): (16, 18), ("none", 1.0): (8, 9)}
TUNING = {"kind": "grid", "factors": [0.1, 1.0, 10.0], "scores": [0.81, 0.86, 0.52], "chosen_factor": 1.0,
          "trial_epochs": 4, "metric": "val_accuracy"}


def write_shares(root) -> None:
    target = np.arange(40) % 2
    for (arm, share), errors in SHARE_ERRORS.items():
        for seed, count in zip((42, 43), errors, strict=True):
            predicted = target.copy()
            predicted[:count] = 1 - predicted[:count]
            extra = {"train_fraction": share, "train_images": int(2000 * share), "learning_rate": 0.001,
                     "tuning": TUNING, "epochs_planned": 15,
                     "best_phase": "fine_tune" if arm == "imagenet" else "train"}
            write_run(root, "cats_and_dogs_filtered", arm, seed, [0.6, 0.9, 0.85], {"accuracy": 1 - count / 40,
                      "loss": 0.3}, predictions=(target, predicted), extra=extra, train_fraction=share)


def test_two_shares_give_a_data_size_table_figure_and_csv(tmp_path):
    write_shares(tmp_path)
    result = report.build(shares_params([0.5, 1.0]), tmp_path)
    text = (tmp_path / "data_size.csv").read_bytes().decode()
    assert "\r" not in text
    table = pd.read_csv(tmp_path / "data_size.csv")
    assert list(table.columns) == ["experiment", "arm", "setting", "train_fraction", "train_images", "metric",
                                   "mean", "low", "high"]
    assert len(table) == 4 and set(table["metric"]) == {"accuracy"}
    none_half = table[(table.arm == "none") & (table.train_fraction == 0.5)].iloc[0]
    assert none_half["train_images"] == 1000 and none_half["mean"] == pytest.approx(1 - 17 / 40)
    assert none_half["low"] >= 0 and none_half["high"] <= 1
    figure = tmp_path / "figures" / "cats_and_dogs_filtered-data-size.png"
    assert figure.read_bytes().startswith(b"\x89PNG")
    readme = (tmp_path / "README.md").read_text()
    assert "![cats_and_dogs_filtered: data size](figures/cats_and_dogs_filtered-data-size.png)" in readme
    size_table = next(t for t in markdown_tables(readme) if t[0][0] == "share of the training split")
    assert [row[:2] for row in size_table[1:]] == [["0.5", "1,000"], ["1", "2,000"]]
    assert size_table[1][4].startswith("+30.0 [")  # imagenet 0.875 against none 0.575 at half the images
    # The main tables use the whole split only; the half share's runs are not in them.
    main = result.summary["experiments"]["cats_and_dogs_filtered"]
    assert main["results"]["none"]["runs"] == ["none-s42", "none-s43"]
    assert main["comparisons"]["imagenet"]["difference"] == pytest.approx((17 - 5) / 80, abs=1e-6)


def test_what_each_arm_was_given_and_the_budget_rule(tmp_path):
    write_shares(tmp_path)
    report.build(shares_params([0.5, 1.0]), tmp_path)
    readme = (tmp_path / "README.md").read_text()
    budget = next(t for t in markdown_tables(readme) if t[0][:3] == ["arm", "setting", "learning rate trained at"])
    assert budget[0] == ["arm", "setting", "learning rate trained at", "tuning", "epochs (planned)", "train images",
                         "seeds"]
    assert budget[1] == ["fine-tuned (imagenet)", "fine-tuned", "0.001",
                         "grid x0.1, x1, x10 (trials of 4 epochs); chose x1 (validation 0.8100, 0.8600, 0.5200)",
                         "15", "2,000", "42, 43"]
    answer_end = readme.split("## The answer")[1].split("## Overall")[0]
    assert "**Budget:** every arm, random initialisation included, got the same learning-rate grid" in answer_end
    rows = {row[0]: row for table in markdown_tables(readme) for row in table}
    assert rows["phase of the best epoch"][1:3] == ["fine_tune", "train"]


def test_one_share_still_writes_data_size_csv_and_untuned_budgets_say_so(tmp_path):
    params = shares_params([1.0]).model_copy(update={"tuning": Tuning(kind="none", factors=[1.0], epochs=1.0)})
    report.build(params, tmp_path)
    assert (tmp_path / "data_size.csv").read_text().splitlines() == [
        "experiment,arm,setting,train_fraction,train_images,metric,mean,low,high",
        "cats_and_dogs_filtered,imagenet,fine_tuned,1,,accuracy,,,",
        "cats_and_dogs_filtered,none,random,1,,accuracy,,,"]
    readme = (tmp_path / "README.md").read_text()
    assert "tuning: none — the reference studies' rates as published, the random arm inherits" in readme
    assert "Across data sizes" not in readme


def test_the_captcha_is_described_by_its_length_and_style_from_params(tmp_path):
    params = yaml.safe_load(paths.PARAMS.read_text(encoding="utf-8"))
    params.update(seeds=1, experiments={"captcha": params["experiments"]["captcha"]})
    params["captcha"] = {**params["captcha"], "length": 4}
    checked = check_params(params)
    report.build(checked, tmp_path)
    readme = (tmp_path / "README.md").read_text()
    style = getattr(checked.captcha, "style", "plain")
    assert f"(CAPTCHAs of 4 characters, style `{style}`)" in readme
    assert "all 4 characters right" in readme and "over the 4 heads" in readme
    # "six" remains only where the reference study's own recipe and notes describe what it trained.
    assert "all six" not in readme and "sum over the six" not in readme
