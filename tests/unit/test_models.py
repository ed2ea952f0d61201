"""One forward pass per registered model and head: random weights, small input, right shapes, no NaN.

The real architectures (Xception, VGG16, GoogLeNet) are built in `pytest -m slow`; the tiny test
backbones and the small CNN go through the same code in the default run.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from tests.tiny_backbone import TINY_LAYERS, each_model
from transferbench.core.errors import ConfigError
from transferbench.data.datasets import Task
from transferbench.models import heads
from transferbench.models.assembly import assemble_model
from transferbench.models.backbones import (
    CORES,
    POOLINGS,
    build_core,
    core_layer_count,
    create_base,
    load_core_weights,
    load_model,
    pooling_layer,
)
from transferbench.models.catalog import HEADS, MODELS, HeadOptions, check_head
from transferbench.models.custom_objects import CaffePreprocess
from transferbench.models.heads import head_spec, task_outputs

TASKS = [Task("binary", 2), Task("multiclass", 3), Task("multihead", 36, 6)]
HEAD_SETTINGS = {  # a pooling and settings each head fits; between them every pooling is used
    "dense": ("max", HeadOptions(units=8, dropout=0.5)),
    "gap": ("avg", HeadOptions()),
    "svm": ("flatten", HeadOptions(l2=1e-4)),
}


def small_shape(name: str) -> tuple[int, int, int]:
    size = max(MODELS.get(name).min_size, 32)
    return (size, size + 8, 3)


@functools.cache
def shared_core(name: str):
    """One core per model, reused under every head (building Xception dominates otherwise)."""
    return build_core(name, small_shape(name))


@pytest.mark.jax
def test_every_head_has_settings_here_and_poolings_match_the_schema():
    from transferbench.config.experiment import ExperimentBase

    accepted = ExperimentBase.model_fields["pooling"].annotation.__args__  # Literal["max", "avg", "flatten"]

    assert sorted(HEAD_SETTINGS) == HEADS.names()
    assert sorted({pooling for pooling, _ in HEAD_SETTINGS.values()}) == sorted(POOLINGS)
    assert tuple(POOLINGS) == accepted


def test_every_catalog_entry_has_a_builder_and_every_builder_an_entry(monkeypatch):
    """models.catalog lists the names once: a builder for a name it lacks is refused, a missing one named."""
    assert CORES.names(private=True) == MODELS.names(private=True)
    assert heads.CLASSIFIERS.names(private=True) == HEADS.names(private=True)
    with pytest.raises(ValueError, match="no model 'resnet9000'"):
        CORES.register("resnet9000")(CORES.get("cnn"))
    with pytest.raises(ConfigError, match="unknown model 'resnet9000'; valid: cnn, googlenet, vgg16, xception$"):
        build_core("resnet9000", (32, 32, 3))
    monkeypatch.setitem(MODELS._entries, "unbuilt", MODELS.get("cnn"))
    with pytest.raises(LookupError, match="model 'unbuilt' has no Keras builder"):
        build_core("unbuilt", (32, 32, 3))


def test_the_test_backbones_are_built_by_name_but_never_listed():
    assert {"tiny", "tiny_aux"} <= set(MODELS.names(private=True)) and "tiny" in MODELS
    assert MODELS.names() == CORES.names() == ["cnn", "googlenet", "vgg16", "xception"]


@pytest.mark.parametrize("name", each_model())
def test_forward_pass_per_model(name):
    shape = small_shape(name)
    base = create_base(name, shape, "max")
    x = np.random.default_rng(0).integers(0, 256, (2, *shape)).astype("float32")
    outputs = base(x)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    features = np.asarray(outputs[0])
    assert features.ndim == 2 and features.shape[0] == 2
    assert len(outputs) == 1 + len(MODELS.get(name).aux_loss_weights), "one feature map per aux classifier"
    for out in outputs:
        assert np.isfinite(np.asarray(out)).all()


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.kind)
@pytest.mark.parametrize("head", HEADS.names())
@pytest.mark.parametrize("name", each_model())
def test_forward_pass_per_model_and_head(name, head, task):
    pooling, options = HEAD_SETTINGS[head]
    check_head(head, task, pooling, options)  # every registered head fits every task kind
    shape = small_shape(name)
    model = assemble_model(name, shared_core(name), shape, task, pooling=pooling, head=head, head_options=options)
    x = np.random.default_rng(1).integers(0, 256, (3, *shape)).astype("float32")
    predictions = model(x)
    predictions = predictions if isinstance(predictions, (list, tuple)) else [predictions]
    main = heads.output_names(task)
    aux = [n for i in range(1, len(MODELS.get(name).aux_loss_weights) + 1) for n in heads.aux_output_names(task, i)]
    assert list(model.output_names) == main + aux
    width = 1 if task.kind == "binary" else task.n_classes
    for output_name, p in zip(model.output_names, predictions, strict=True):
        p = np.asarray(p)
        assert p.shape == (3, width), output_name
        assert np.isfinite(p).all(), output_name
        if width > 1 and head != "svm":  # svm outputs are margins, not probabilities
            np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    picked = task_outputs(model, [np.asarray(p) for p in predictions], task)
    assert len(picked) == task.n_outputs and all(p.shape == (3, width) for p in picked)


@pytest.mark.jax
def test_head_that_does_not_fit_the_task_names_the_ones_that_do(monkeypatch):
    monkeypatch.setitem(HEADS._entries, "binary_only",
                        dataclasses.replace(HEADS.get("dense"), tasks=frozenset({"binary"})))
    with pytest.raises(ConfigError) as err:
        check_head("binary_only", Task("multiclass", 3))
    message = str(err.value)
    assert "'binary_only'" in message and "multiclass" in message
    assert "dense, gap, svm" in message and "binary_only," not in message


@pytest.mark.jax
@pytest.mark.parametrize("pooling", ["max", "flatten"])
def test_gap_head_refuses_other_pooling(pooling):
    with pytest.raises(ConfigError, match=f"'gap'.*pooling '{pooling}'.*accepted: pooling avg"):
        check_head("gap", Task("multiclass", 3), pooling, HeadOptions())
    check_head("gap", Task("multiclass", 3), "avg", HeadOptions())


@pytest.mark.jax
def test_gap_head_refuses_a_hidden_layer_and_svm_needs_l2():
    with pytest.raises(ConfigError, match="'gap'.*head_units 64.*accepted: head_units 0"):
        check_head("gap", Task("binary", 2), "avg", HeadOptions(units=64))
    with pytest.raises(ConfigError, match="'svm'.*head_l2 0.0.*accepted: head_l2 > 0"):
        check_head("svm", Task("binary", 2), "max", HeadOptions(l2=0.0))


@pytest.mark.jax
def test_unknown_pooling_lists_the_choices():
    with pytest.raises(ConfigError, match="'sum'.*accepted: max, avg, flatten"):
        pooling_layer("sum")


@pytest.mark.slow
def test_googlenet_matches_the_seed_at_224():
    """Reference study 004's model summary: 10,334,030 parameters with both aux classifiers; aux pools leave 4x4."""
    shape = (224, 224, 3)
    model = assemble_model("googlenet", build_core("googlenet", shape), shape, Task("multiclass", 10),
                           pooling="avg", head="dense", head_options=HeadOptions(dropout=0.4))
    assert model.count_params() == 10_334_030
    assert model.get_layer("aux1_pool").output.shape[1:3] == (4, 4)
    assert model.get_layer("aux2_pool").output.shape[1:3] == (4, 4)
    assert model.get_layer("aux1_dropout").rate == 0.7 and model.get_layer("head_dropout").rate == 0.4
    assert list(model.output_names) == ["label", "aux1", "aux2"]


@pytest.mark.jax
def test_task_outputs_drop_aux_and_keep_order():
    class Fake:
        name = "fake"
        output_names = ["head0", "head1", "aux1_head0", "aux1_head1"]

    preds = [np.full((2, 3), i, dtype="float32") for i in range(4)]
    picked = task_outputs(Fake(), preds, Task("multihead", 3, 2))
    assert [int(p[0, 0]) for p in picked] == [0, 1]
    with pytest.raises(ValueError, match="3 predictions"):
        task_outputs(Fake(), preds[:3], Task("multihead", 3, 2))

    class Single:
        name = "single"
        output_names = ["label"]

    alone = np.zeros((2, 1))
    (picked,) = task_outputs(Single(), alone, Task("binary", 2))  # predict returns a bare array
    assert picked is alone or np.array_equal(picked, alone)


@pytest.mark.jax
def test_decision_rules_per_head():
    margins = [np.array([[-0.2], [0.1], [0.7]])]
    assert head_spec("svm").predicted_classes(Task("binary", 2), margins)[:, 0].tolist() == [0, 1, 1]
    assert head_spec("dense").predicted_classes(Task("binary", 2), margins)[:, 0].tolist() == [0, 0, 1]
    scores = [np.array([[0.1, 0.9, 0.0], [2.0, -1.0, 0.5]])]
    assert head_spec("svm").predicted_classes(Task("multiclass", 3), scores)[:, 0].tolist() == [1, 0]


@pytest.mark.jax
def test_core_layer_count_is_the_core_layers_at_any_size():
    assert core_layer_count("tiny") == len(TINY_LAYERS) == len(build_core("tiny", (40, 24, 3)).layers)
    assert core_layer_count("cnn") == len(build_core("cnn", (64, 80, 3)).layers)


@pytest.mark.slow
def test_vgg16_core_has_the_19_layers_seed_003_counts():
    assert core_layer_count("vgg16") == 19  # reference study 003's model.layers[:18] freezes all but block5_pool


@pytest.mark.jax
def test_image_under_minimum_is_refused():
    with pytest.raises(ConfigError, match="xception's minimum 71x71"):
        build_core("xception", (70, 200, 3))


@pytest.mark.jax
def test_xception_preprocessing_maps_pixels_to_minus_one_one():
    layer = CORES.get("xception").preprocess()
    out = np.asarray(layer(np.array([[0.0, 127.5, 255.0]])))
    np.testing.assert_allclose(out, [[-1.0, 0.0, 1.0]], atol=1e-6)


@pytest.mark.jax
def test_caffe_preprocessing_matches_keras_vgg16():
    import keras

    x = np.random.default_rng(1).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    ours = np.asarray(CaffePreprocess()(x))
    theirs = np.asarray(keras.applications.vgg16.preprocess_input(x.copy()))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


@pytest.mark.jax
def test_weights_file_round_trip_and_mismatch(tmp_path):
    core = build_core("cnn", (32, 32, 3))
    path = tmp_path / "cnn.weights.h5"
    core.save_weights(path)
    fresh = build_core("cnn", (48, 40, 3))  # a core's weights do not depend on the input size
    load_core_weights(fresh, path, "cnn")
    for a, b in zip(core.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    other = build_core("tiny", (32, 32, 3))
    with pytest.raises(ConfigError, match="does not fit model 'tiny'"):
        load_core_weights(other, path, "tiny")


@pytest.mark.jax
def test_model_with_custom_layer_survives_save_and_load(tmp_path, monkeypatch):
    # VGG16's preprocessing is a layer of ours; the tiny backbone takes it, standing in for VGG16.
    monkeypatch.setitem(CORES._entries, "tiny",
                        dataclasses.replace(CORES.get("tiny"), preprocess=CORES.get("vgg16").preprocess))
    base = create_base("tiny", (32, 32, 3), "avg")
    base.save(tmp_path / "m.keras")
    again = load_model(tmp_path / "m.keras")
    assert isinstance(again.get_layer("preprocess"), CaffePreprocess)
    x = np.random.default_rng(2).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(base(x)), np.asarray(again(x)), rtol=1e-5)
