"""An experiment's runs: weights arms x training seeds, their names and folders, and bad lists."""

from __future__ import annotations

import pytest

from transferbench.core.errors import ConfigError
from transferbench.study.params import check_params
from transferbench.study.runs import init_dir, model_dir, report_dir, run_name, runs


def test_default_params_train_both_arms(params):
    params = check_params(params)
    assert [arm.source for arm in params.arms("captcha")] == ["imagenet", "none"]
    assert [run_name(r) for r in runs(params, "captcha")] == ["imagenet-s42", "none-s42"]


def test_a_scalar_from_dvc_exp_run_S_gives_one_arm(params):
    params["weights"] = "none"  # what `dvc exp run -S weights=none` writes
    assert [run_name(r) for r in runs(check_params(params), "captcha")] == ["none-s42"]


def test_seeds_repeat_every_arm_with_consecutive_training_seeds(params):
    params["seeds"] = 3
    found = runs(check_params(params), "captcha")
    assert [(r.weights, r.seed) for r in found] == [
        ("imagenet", 42), ("imagenet", 43), ("imagenet", 44), ("none", 42), ("none", 43), ("none", 44)]
    assert all(r.name == "captcha" for r in found)


def test_an_experiment_may_set_its_own_weights(params):
    params["experiments"]["captcha"].update(model="cnn", weights="none")
    # The top-level imagenet arm does not apply to a model without ImageNet weights.
    assert [run_name(r) for r in runs(check_params(params), "captcha")] == ["none-s42"]


def test_run_folders_are_distinct_per_arm_and_seed(params):
    folders = {(init_dir(r), model_dir(r), report_dir(r)) for r in runs(check_params(params), "captcha")}
    assert len({f[1] for f in folders}) == len({f[2] for f in folders}) == 2
    assert {f[0].name for f in folders} == {"imagenet", "none"}


@pytest.mark.parametrize("weights, message", [
    ([], "weights is an empty list"),
    (["none", "none"], "names one source twice"),
    (["none", "bogus"], "weights is 'bogus'; accepted: imagenet, none"),
    (["imagenet", None, "none"], "names one source twice"),
])
def test_bad_weight_lists(params, weights, message):
    params["weights"] = weights
    with pytest.raises(ConfigError, match=message):
        check_params(params)


@pytest.mark.parametrize("seeds", [0, -1, 1.5, "two"])
def test_bad_seeds(params, seeds):
    params["seeds"] = seeds
    with pytest.raises(ConfigError, match="seeds must be"):
        check_params(params)


def test_a_weights_file_arm_is_labelled_by_its_file_name(params, tmp_path):
    (tmp_path / "start.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(8))
    params["experiments"]["captcha"]["weights"] = [str(tmp_path / "start.weights.h5"), "none"]
    found = runs(check_params(params), "captcha")
    assert [run_name(r) for r in found] == ["file-start.weights.h5-s42", "none-s42"]
    assert found[0].weights == str(tmp_path / "start.weights.h5") and found[0].arm.file == tmp_path / "start.weights.h5"
    assert init_dir(found[0]).name == "file-start.weights.h5"
