"""An experiment's runs: weights arms x training seeds, their names and folders, and bad lists."""

from __future__ import annotations

import pytest

from transferbench.core.errors import ConfigError
from transferbench.study.params import check_params
from transferbench.study.runs import init_dir, model_dir, report_dir, run_name, runs


def test_default_params_train_three_settings(params):
    params = check_params(params)
    assert [arm.source for arm in params.arms("captcha")] == ["imagenet", "imagenet", "none"]
    found = runs(params, "captcha")
    assert [run_name(r) for r in found] == ["imagenet-s42", "imagenet-fixed-s42", "none-s42"]
    assert [r.setting for r in found] == ["fine_tuned", "fixed_features", "random"]


def test_fixed_features_off_gives_the_sources_alone(params):
    params["fixed_features"] = False
    assert [run_name(r) for r in runs(check_params(params), "captcha")] == ["imagenet-s42", "none-s42"]
    params["fixed_features"] = True
    params["experiments"]["captcha"]["fixed_features"] = False  # an experiment's own switch wins
    assert [run_name(r) for r in runs(check_params(params), "captcha")] == ["imagenet-s42", "none-s42"]
    params["fixed_features"] = "yes"
    with pytest.raises(ConfigError, match="fixed_features must be true or false"):
        check_params(params)


def test_experiments_without_imagenet_weights_keep_one_arm(params):
    params = check_params(params)
    for name in ("cifar10", "cats_and_dogs_filtered_cnn"):
        assert [(run_name(r), r.setting) for r in runs(params, name)] == [("none-s42", "random")]


def test_each_setting_trains_its_own_recipe(params):
    params = check_params(params)
    two_phase = {run_name(r): r for r in runs(params, "cats_and_dogs_filtered")}
    assert two_phase["imagenet-s42"].settings == params.experiments["cats_and_dogs_filtered"]
    fixed, random = two_phase["imagenet-fixed-s42"].settings, two_phase["none-s42"].settings
    assert (fixed.strategy, fixed.head, fixed.head_units, fixed.head_dropout) == ("frozen", "dense", 0, 0.0)
    assert (fixed.epochs, fixed.learning_rate, fixed.pooling) == (15, 0.001, "avg")
    assert random.strategy == "full" and random.head_dropout == 0.2 and not hasattr(random, "head_epochs")


def test_an_experiment_that_freezes_its_base_adds_a_fine_tuned_arm(params):
    found = {run_name(r): r for r in runs(check_params(params), "dogs_vs_cats")}
    assert list(found) == ["imagenet-s42", "imagenet-tuned-s42", "none-s42"]
    own, tuned, random = found.values()
    assert (own.setting, own.settings.strategy, own.settings.head_units) == ("fixed_features", "frozen", 256)
    assert (tuned.setting, tuned.settings.strategy, tuned.settings.head_units) == ("fine_tuned", "full", 256)
    assert (random.setting, random.settings.strategy) == ("random", "full")


def test_an_svm_experiment_keeps_its_svm_head_when_fixed(params):
    params["experiments"]["pets"].update(head="svm", head_l2=0.001, head_units=64)
    fixed = {run_name(r): r for r in runs(check_params(params), "pets")}["imagenet-fixed-s42"].settings
    assert (fixed.head, fixed.head_l2, fixed.head_units) == ("svm", 0.001, 0)


def test_a_scalar_from_dvc_exp_run_S_gives_one_arm(params):
    params["weights"] = "none"  # what `dvc exp run -S weights=none` writes
    assert [run_name(r) for r in runs(check_params(params), "captcha")] == ["none-s42"]


def test_seeds_repeat_every_arm_with_consecutive_training_seeds(params):
    params["seeds"], params["fixed_features"] = 3, False
    found = runs(check_params(params), "captcha")
    assert [(r.weights, r.seed) for r in found] == [
        ("imagenet", 42), ("imagenet", 43), ("imagenet", 44), ("none", 42), ("none", 43), ("none", 44)]
    assert all(r.name == "captcha" for r in found)


def test_an_experiment_may_set_its_own_weights(params):
    params["experiments"]["captcha"].update(model="cnn", weights="none")
    # The top-level imagenet arm does not apply to a model without ImageNet weights.
    assert [run_name(r) for r in runs(check_params(params), "captcha")] == ["none-s42"]


def test_run_folders_are_distinct_per_arm_and_seed_and_settings_share_their_init(params):
    folders = {(init_dir(r), model_dir(r), report_dir(r)) for r in runs(check_params(params), "captcha")}
    assert len({f[1] for f in folders}) == len({f[2] for f in folders}) == 3
    assert {f[0].name for f in folders} == {"imagenet", "none"}  # imagenet-fixed starts from imagenet's file


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
    assert [run_name(r) for r in found] == ["file-start.weights.h5-s42", "file-start.weights.h5-fixed-s42",
                                            "none-s42"]
    assert found[0].weights == str(tmp_path / "start.weights.h5") and found[0].arm.file == tmp_path / "start.weights.h5"
    assert init_dir(found[0]).name == init_dir(found[1]).name == "file-start.weights.h5"
