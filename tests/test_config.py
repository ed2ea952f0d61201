"""Bad input is refused before any work, with a message that names the value and what is accepted."""

from __future__ import annotations

import pytest

from stages.config import ConfigError, check_params, load_params, weights_source


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
    check_fails(params, "'resnet9000'", "cnn", "vgg16", "xception")


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
