"""Arm titles follow what params plan for an arm, not only its label: a frozen recipe's own arm is fixed features."""

from __future__ import annotations

import numpy as np
import yaml

from tests.report_runs import write_run
from transferbench.core import paths
from transferbench.reporting import report
from transferbench.study.params import check_params


def test_a_frozen_recipes_own_arm_is_fixed_features_and_its_tuned_arm_fine_tuned(tmp_path):
    params = yaml.safe_load(paths.PARAMS.read_text(encoding="utf-8"))
    params.update(weights=["imagenet", "none"], seeds=1, fixed_features=True,
                  experiments={"dogs_vs_cats": params["experiments"]["dogs_vs_cats"]})  # seed 003: base frozen
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
    assert summary["pretrained_arm"] == "imagenet"  # the overall table keeps the seed's own recipe, as published
    first_table = (tmp_path / "README.md").read_text().split("## The answer")[1].split("\n\n")[1]
    assert "| fixed features (imagenet) " in first_table
    assert "| fine-tuned (imagenet-tuned) " in first_table
    assert "fine-tuned (imagenet) " not in first_table
