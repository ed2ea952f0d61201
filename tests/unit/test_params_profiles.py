"""params.yaml is what conf/ composes to (DVC's Hydra composition), and the profiles are studies that check."""

from __future__ import annotations

import zipfile

import pytest
import yaml

from tools.compose_params import composed
from transferbench.core import paths
from transferbench.study.params import check_params


def test_params_yaml_is_conf_composed_byte_for_byte():
    # Otherwise the first `dvc exp run -S` would change more than its overrides.
    assert (paths.ROOT / "params.yaml").read_text() == composed(), \
        "params.yaml is stale: write it with `python -m tools.compose_params --write`"


def test_the_cpu_profile_is_the_small_offline_study():
    params = yaml.safe_load(composed("profile=cpu"))
    assert list(params["experiments"]) == ["captcha"]
    captcha = params["experiments"]["captcha"]
    assert (captcha["model"], captcha["pooling"], captcha["head_units"]) == ("cnn", "flatten", 128)
    assert (captcha["batch_size"], captcha["epochs"]) == (32, 8)
    assert (params["weights"], params["seeds"], params["tuning"]["kind"]) == ("none", 1, "none")
    assert (params["captcha"]["train"], params["captcha"]["length"], params["captcha"]["width"]) == (5000, 4, 80)
    check_params(params)


@pytest.mark.parametrize("overrides", [("profile=cpu_transfer",), ("profile=cpu_transfer", "weights=none")])
def test_the_transfer_profile_keeps_the_cpu_study_and_adds_the_question(overrides, tmp_path):
    cpu = yaml.safe_load(composed("profile=cpu"))
    params = yaml.safe_load(composed(*overrides))
    assert params["captcha"] == cpu["captcha"] and params["experiments"] == cpu["experiments"]
    assert (params["seed"], params["seeds"], params["tuning"]["kind"], params["train_fraction"]) == \
        (7, 3, "grid", [0.1, 0.3, 1.0])
    assert params["weights"] == ("none" if "weights=none" in overrides else ["cnn.keras", "none"])
    with zipfile.ZipFile(tmp_path / "cnn.keras", "w") as model:  # the CPU study's model: the README copies it there
        model.writestr("config.json", "{}")
    check_params(params, root=tmp_path)
