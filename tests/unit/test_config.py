"""Bad input is refused before any work, with a message that names the value and what is accepted."""

from __future__ import annotations

import pytest

from transferbench.core.errors import ConfigError
from transferbench.config.checks import weights_source
from transferbench.study.params import check_params, load_params


def test_repository_params_are_valid():
    params = load_params()
    assert params["experiments"]["captcha"]["model"] == "xception"


def check_fails(params, *fragments):
    with pytest.raises(ConfigError) as err:
        check_params(params)
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)


def test_unknown_model_lists_valid_names(params):
    params["experiments"]["captcha"]["model"] = "resnet9000"
    check_fails(params, "'resnet9000'", "cnn, googlenet, tiny, tiny_aux, vgg16, xception")


def test_unknown_dataset(params):
    params["experiments"]["captcha"]["dataset"] = "mnist"
    check_fails(params, "'mnist'", "captcha")


def test_experiment_without_its_dataset_section(params):
    del params["captcha"]
    check_fails(params, "no 'captcha' section")


@pytest.mark.parametrize("value", ["imagenette", "", 3])
def test_unknown_weights_value(params, value):
    params["weights"] = value
    check_fails(params, "imagenet, none")


def test_weights_file_missing(params, tmp_path):
    params["weights"] = str(tmp_path / "absent.weights.h5")
    check_fails(params, "absent.weights.h5", "does not exist")


def test_weights_file_corrupt(params, tmp_path):
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    params["weights"] = str(bad)
    check_fails(params, "bad.weights.h5", "not an HDF5 file")


def test_weights_none_spellings():
    assert weights_source("none") == "none"
    assert weights_source(None) == "none"
    assert weights_source("imagenet") == "imagenet"


@pytest.mark.parametrize("key,value", [("train", 0), ("validation", -5), ("test", 0), ("length", 0)])
def test_counts_must_be_positive(params, key, value):
    params["captcha"][key] = value
    check_fails(params, f"captcha.{key}", ">= 1", repr(value))


def test_image_under_model_minimum(params):
    params["captcha"]["height"] = 60  # the captcha package's default height: too small for Xception
    check_fails(params, "160x60", "xception", "71")


def test_unknown_key_is_an_error(params):
    params["experiments"]["captcha"]["epoch"] = 3  # typo of `epochs`
    check_fails(params, "experiments.captcha.epoch", "epochs")


def test_unknown_head_and_optimizer(params):
    params["experiments"]["captcha"]["head"] = "svm9"
    check_fails(params, "'svm9'", "dense")
    params["experiments"]["captcha"]["head"] = "dense"
    params["experiments"]["captcha"]["optimizer"] = "adagrad"
    check_fails(params, "'adagrad'", "adam, rmsprop, sgd")


def test_model_without_imagenet_weights(params):
    params["experiments"]["captcha"]["model"] = "cnn"
    check_fails(params, "'cnn'", "no ImageNet weights", "weights=none")
    params["weights"] = "none"
    check_params(params)


def test_too_few_distinct_strings(params):
    params["captcha"].update(alphabet="AB", length=3)
    check_fails(params, "2**3")


# ---- strategies, heads, pooling, augmentation and schedules ----------------------------------

def captcha(params) -> dict:
    return params["experiments"]["captcha"]


def test_unknown_strategy_lists_them(params):
    captcha(params)["strategy"] = "finetune"
    check_fails(params, "experiments.captcha.strategy", "'finetune'", "full, partial, frozen, two_phase")


@pytest.mark.parametrize("freeze,fragments", [
    (200, ["freeze is 200", "132 layers", "from 1 to 131"]),
    (132, ["freeze is 132", "132 layers", "from 1 to 131"]),
    (0, ["freeze is 0", "from 1 to 131"]),
    (0.001, ["freeze is 0.001 (0 of them)", "0 < f < 1"]),
    (1.5, ["freeze is 1.5", "0 < f < 1"]),
    (-3, ["freeze is -3", "layer count >= 0"]),
    ("half", ["'half'", "layer count", "fraction 0 < f < 1"]),
])
def test_partial_freeze_out_of_range(params, freeze, fragments):
    captcha(params).update(strategy="partial", freeze=freeze)
    check_fails(params, *fragments)


def test_partial_freeze_in_range_passes(params):
    captcha(params).update(strategy="partial", freeze=131)
    check_params(params)
    captcha(params)["freeze"] = 0.5
    check_params(params)


def test_two_phase_needs_its_keys_and_head_epochs_below_epochs(params):
    captcha(params).update(strategy="two_phase", head_epochs=30, freeze=0)
    check_fails(params, "strategy two_phase needs fine_tune_learning_rate",
                "+experiments.captcha.fine_tune_learning_rate")
    captcha(params)["fine_tune_learning_rate"] = 1e-5
    check_fails(params, "head_epochs is 30", "epochs is 30", "1 <= head_epochs < epochs")
    captcha(params)["head_epochs"] = 0
    check_fails(params, "experiments.captcha.head_epochs", ">= 1", "0")
    captcha(params)["head_epochs"] = 5
    check_params(params)


def test_a_key_of_another_strategy_is_refused(params):
    captcha(params).update(strategy="full", freeze=10)
    check_fails(params, "experiments.captcha.freeze is for strategy partial / two_phase, not full")
    captcha(params).update(strategy="partial", head_epochs=3)
    check_fails(params, "head_epochs is for strategy two_phase, not partial")


@pytest.mark.parametrize("schedule,fragments", [
    ({"kind": "cosine"}, ["schedule.kind is 'cosine'", "constant, plateau, step"]),
    ({"kind": "step", "factor": 0.96}, ["missing key experiments.captcha.schedule.every"]),
    ({"kind": "constant", "factor": 0.5}, ["unknown key experiments.captcha.schedule.factor", "accepted: kind"]),
    ({"kind": "step", "factor": 1.5, "every": 8}, ["schedule.factor must be < 1", "1.5"]),
    ({"kind": "step", "factor": 0.96, "every": 0}, ["schedule.every must be >= 1", "0"]),
    ({"factor": 0.5}, ["must be a mapping with `kind`", "constant, plateau, step"]),
])
def test_bad_schedule(params, schedule, fragments):
    captcha(params)["schedule"] = schedule
    check_fails(params, *fragments)


def test_seed_004_step_schedule_passes(params):
    captcha(params)["schedule"] = {"kind": "step", "factor": 0.96, "every": 8}
    check_params(params)


def test_unknown_pooling_and_augmentation(params):
    captcha(params)["pooling"] = "sum"
    check_fails(params, "'sum'", "max, avg, flatten")
    captcha(params).update(pooling="flatten", augment="rotate")
    check_fails(params, "'rotate'", "none, flip")


def test_head_settings_that_do_not_fit(params):
    captcha(params).update(head="gap", pooling="max")
    check_fails(params, "head 'gap'", "pooling 'max'", "accepted: pooling avg")
    captcha(params).update(pooling="avg", head_units=64)
    check_fails(params, "head 'gap'", "head_units 64", "accepted: head_units 0")
    captcha(params).update(head="svm", head_units=0, head_l2=0.0)
    check_fails(params, "head 'svm'", "head_l2 0.0", "head_l2 > 0")
    captcha(params)["head_l2"] = 1e-4
    check_params(params)
    captcha(params)["head_dropout"] = 1.0
    check_fails(params, "head_dropout must be < 1", "1.0")
    captcha(params).update(head_dropout=0.5, head_units=-1)
    check_fails(params, "head_units must be >= 0", "-1")


def test_model_list_includes_googlenet(params):
    captcha(params)["model"] = "inception"
    check_fails(params, "'inception'", "cnn, googlenet, tiny, tiny_aux, vgg16, xception")
