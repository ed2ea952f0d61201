"""One forward pass per registered model and head: random weights, small input, right shapes, no NaN."""

from __future__ import annotations

import numpy as np
import pytest

from stages.config import ConfigError
from stages.datasets import Task
from stages.heads import HEADS, check_head
from stages.models import MODELS, CaffePreprocess, build_core, create_base, load_core_weights


@pytest.mark.parametrize("name", MODELS.names())
def test_forward_pass_per_model(name):
    size = max(MODELS.get(name).min_size, 32)
    base = create_base(name, (size, size + 8, 3), "max")
    x = np.random.default_rng(0).integers(0, 256, (2, size, size + 8, 3)).astype("float32")
    features = np.asarray(base(x))
    assert features.ndim == 2 and features.shape[0] == 2
    assert np.isfinite(features).all()


@pytest.mark.parametrize("head", HEADS.names())
@pytest.mark.parametrize("task", [Task("binary", 2), Task("multiclass", 3), Task("multihead", 36, 6)])
def test_forward_pass_per_head(head, task):
    import keras

    if task.kind not in HEADS.get(head).tasks:
        with pytest.raises(ConfigError):
            check_head(head, task)
        return
    base = create_base("cnn", (32, 32, 3))
    outputs = HEADS.get(head).build(base.output, task)
    model = keras.Model(base.input, outputs)
    predictions = model(np.zeros((3, 32, 32, 3), "float32"))
    predictions = predictions if isinstance(predictions, (list, tuple)) else [predictions]
    assert len(predictions) == task.n_outputs
    width = 1 if task.kind == "binary" else task.n_classes
    for p in predictions:
        p = np.asarray(p)
        assert p.shape == (3, width) and np.isfinite(p).all()
        if width > 1:
            np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


def test_image_under_minimum_is_refused():
    with pytest.raises(ConfigError, match="xception's minimum 71x71"):
        build_core("xception", (70, 200, 3), "max")


def test_xception_preprocessing_maps_pixels_to_minus_one_one():
    layer = MODELS.get("xception").preprocess()
    out = np.asarray(layer(np.array([[0.0, 127.5, 255.0]])))
    np.testing.assert_allclose(out, [[-1.0, 0.0, 1.0]], atol=1e-6)


def test_caffe_preprocessing_matches_keras_vgg16():
    import keras

    x = np.random.default_rng(1).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    ours = np.asarray(CaffePreprocess()(x))
    theirs = np.asarray(keras.applications.vgg16.preprocess_input(x.copy()))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


def test_weights_file_round_trip_and_mismatch(tmp_path):
    core = build_core("cnn", (32, 32, 3), "max")
    path = tmp_path / "cnn.weights.h5"
    core.save_weights(path)
    fresh = build_core("cnn", (32, 32, 3), "max")
    load_core_weights(fresh, path, "cnn")
    for a, b in zip(core.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Same architecture at another input size: the Dense layer's shape differs.
    other = build_core("cnn", (64, 64, 3), "max")
    with pytest.raises(ConfigError, match="does not fit model 'cnn'"):
        load_core_weights(other, path, "cnn")


def test_model_with_custom_layer_survives_save_and_load(tmp_path):
    import keras

    base = create_base("vgg16", (32, 32, 3), "avg")
    base.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(2).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(base(x)), np.asarray(again(x)), rtol=1e-5)
