"""The three settings as arms train what they claim; reference study 000's class weights and plateau monitor; test
loss on the training loss's definition; history's cumulative seconds. All on the tiny test backbones."""

from __future__ import annotations

import io

import keras
import numpy as np
import pandas as pd
import pytest

from tests.unit.test_strategies import entry, head_weights, ids, learnable
from transferbench.config.experiment import Plateau
from transferbench.models import strategies
from transferbench.models.backbones import core_of
from transferbench.study.params import check_params
from transferbench.study.runs import run_name, runs
from transferbench.training.batches import ArrayBatches, class_weights
from transferbench.training.evaluation import keras_loss, loss_definition
from transferbench.training.fit import build_model, compile_model, fit, schedule_callbacks
from transferbench.training.train import history_csv

HDF5 = b"\x89HDF\r\n\x1a\n"


def arms_of(params, tmp_path, size: int = 32, **overrides) -> dict:
    """Experiment ``x`` (tiny backbone, cats vs dogs) with a pretrained file arm and a random one, by run name."""
    (tmp_path / "start.weights.h5").write_bytes(HDF5 + bytes(8))  # arms are built here from None: never loaded
    params["weights"] = [str(tmp_path / "start.weights.h5"), "none"]
    params["fixed_features"] = True
    params["cats_and_dogs_filtered"].update(height=size, width=size)
    params["experiments"] = {"x": entry(**overrides)}
    return {run_name(r).removesuffix("-s42"): r for r in runs(check_params(params), "x")}


@pytest.mark.parametrize("strategy, extra", [
    ("partial", {"freeze": 4}),
    ("two_phase", {"head_epochs": 1, "fine_tune_learning_rate": 1e-4, "freeze": 0}),
])
def test_each_setting_trains_the_weights_it_claims(params, tmp_path, strategy, extra):
    arms = arms_of(params, tmp_path, strategy=strategy, head_units=8, head_dropout=0.3, **extra)
    assert list(arms) == ["file-start.weights.h5", "file-start.weights.h5-fixed", "none"]
    own, fixed, random = arms.values()
    assert (own.setting, fixed.setting, random.setting) == ("fine_tuned", "fixed_features", "random")

    model = build_model(random, None)  # random: everything trains, whatever the experiment's strategy
    assert ids(model.trainable_weights) == learnable(model.layers) | learnable(core_of(model).layers)

    model = build_model(fixed, None)  # fixed features: one linear classifier on the frozen base
    core = core_of(model)
    assert ids(model.trainable_weights) == head_weights(model)
    assert [w.path for w in model.trainable_weights] == ["label/kernel", "label/bias"]
    assert model.get_layer("label").kernel.shape == (8, 1), "pooled features straight into the classifier"
    assert not any(layer.trainable for layer in core.layers)
    assert len(strategies.phases(fixed.settings)) == 1 and fixed.settings.epochs == own.settings.epochs

    model = build_model(own, None)  # fine-tuned: the experiment's own strategy (its first phase here)
    trainable_core = ids(model.trainable_weights) & ids(core_of(model).weights)
    assert trainable_core == (learnable(core_of(model).layers[4:]) if strategy == "partial" else set())
    assert len(head_weights(model)) == 4, "the experiment's own head: hidden Dense(8) + classifier"


def test_a_frozen_recipe_is_the_fixed_setting_and_its_tuned_arm_trains_the_base(params, tmp_path):
    arms = arms_of(params, tmp_path, strategy="frozen", head_units=8)
    assert list(arms) == ["file-start.weights.h5", "file-start.weights.h5-tuned", "none"]
    own, tuned, _ = arms.values()
    assert (own.setting, tuned.setting) == ("fixed_features", "fine_tuned")
    model = build_model(own, None)
    assert ids(model.trainable_weights) == head_weights(model)
    model = build_model(tuned, None)
    assert learnable(core_of(model).layers) <= ids(model.trainable_weights)


# ---- reference study 000's pets recipe: balanced class weights, plateau on val_loss -------------

def test_balanced_class_weights_are_sklearns():
    assert class_weights("balanced", np.array([0, 0, 0, 1]), 2) == {0: pytest.approx(4 / 6), 1: 2.0}
    assert class_weights("balanced", np.array([0, 2, 2, 2, 2, 0]), 3) == {0: 1.0, 2: 0.5}  # class 1 absent
    assert class_weights("none", np.array([0, 1]), 2) is None


def test_training_loss_weighs_classes_when_balanced(params, tmp_path):
    """One batch, one epoch: the logged loss is the class-weighted loss of the initial model."""
    params["weights"] = "none"
    params["cats_and_dogs_filtered"].update(height=24, width=24)
    params["experiments"] = {"x": entry(model="cnn", pooling="avg", batch_size=8, epochs=1, learning_rate=1e-9,
                                        class_weight="balanced")}
    (experiment,) = runs(check_params(params), "x")
    rng = np.random.default_rng(0)
    images, targets = rng.integers(0, 256, (8, 24, 24, 3), dtype=np.uint8), np.array([0, 0, 0, 0, 0, 0, 1, 1])
    history = fit(experiment, None, ArrayBatches(images, targets, 8), ArrayBatches(images, targets, 8),
                  tmp_path / "work", verbose=0)
    keras.utils.set_random_seed(experiment.seed)  # fit builds the model right after seeding: the same start
    p = build_model(experiment, None).predict(images, verbose=0).reshape(-1).astype("float64")
    per_image = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    weights = np.where(targets == 1, 8 / (2 * 2), 8 / (2 * 6))
    assert history[0]["loss"] == pytest.approx(np.mean(weights * per_image), rel=1e-4)
    assert history[0]["loss"] != pytest.approx(np.mean(per_image), rel=1e-3)


@pytest.mark.parametrize("monitor, mode", [("val_loss", "min"), ("val_accuracy", "max")])
def test_plateau_watches_its_monitor(monitor, mode):
    schedule = Plateau(kind="plateau", factor=0.5, patience=3, min_lr=1e-6, monitor=monitor)
    (callback,) = schedule_callbacks(schedule, strategies.Phase("train", 0, 3, 1e-3, 0))
    assert (callback.monitor, callback.mode) == (monitor, mode)
    callback.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    callback.model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    callback.on_train_begin()
    # The loss falls while accuracy stays: only a val_accuracy schedule sees a plateau and halves the rate.
    for epoch, (loss, accuracy) in enumerate([(1.0, 0.5), (0.9, 0.5), (0.8, 0.5), (0.7, 0.5), (0.6, 0.5)]):
        callback.on_epoch_end(epoch, {"val_loss": loss, "val_accuracy": accuracy})
    rate = float(callback.model.optimizer.learning_rate)
    assert rate == pytest.approx(1e-3 if monitor == "val_loss" else 5e-4)


def test_default_params_follow_seed_000_for_pets(params):
    pets = check_params(params).experiments["pets"]
    assert pets.class_weight == "balanced" and pets.schedule.monitor == "val_loss"


def test_balanced_class_weights_refuse_several_outputs(params):
    from transferbench.core.errors import ConfigError

    params["experiments"]["captcha"]["class_weight"] = "balanced"
    with pytest.raises(ConfigError, match="experiments.captcha.class_weight is 'balanced' but the model has 6 outputs"):
        check_params(params)
    params["experiments"]["captcha"]["class_weight"] = "equal"
    with pytest.raises(ConfigError, match="class_weight is 'equal'; accepted: none, balanced"):
        check_params(params)


# ---- test loss on the training loss's definition ------------------------------------------------

def model_and_data(params, n_classes_dataset: str, **overrides):
    params["weights"] = "none"
    params[n_classes_dataset].update(height=16, width=16)
    params["experiments"] = {"x": entry(dataset=n_classes_dataset, pooling="avg", **overrides)}
    (experiment,) = runs(check_params(params), "x")
    keras.utils.set_random_seed(1)
    model = build_model(experiment, None)
    compile_model(model, experiment)
    rng = np.random.default_rng(2)
    n_classes = experiment.task.n_classes
    return experiment, model, rng.integers(0, 256, (10, 16, 16, 3)).astype("float32"), rng.integers(0, n_classes, 10)


@pytest.mark.parametrize("dataset, overrides", [
    ("cifar10", {"model": "tiny_aux"}),  # auxiliary classifiers weighing 0.3 and 0.1 (GoogLeNet: 0.3, 0.3)
    ("pets", {"model": "tiny", "head": "svm", "head_l2": 0.05}),  # the SVM's L2 penalty
    ("cats_and_dogs_filtered", {"model": "tiny", "head_l2": 0.02}),  # a sigmoid unit with L2
])
def test_test_loss_is_keras_evaluate_loss(params, dataset, overrides):
    experiment, model, x, y = model_and_data(params, dataset, **overrides)
    targets = {name: y for name in model.output_names} if len(model.output_names) > 1 else y
    scores = model.evaluate(x, targets, batch_size=3, verbose=0, return_dict=True)  # uneven last batch
    loss, task_loss = keras_loss(model, experiment, model.predict(x, verbose=0), y)
    assert loss == pytest.approx(scores["loss"], rel=1e-4)
    if "label_loss" in scores:
        # Keras means its per-output losses over batches unweighted: one batch makes them per-image means.
        whole = model.evaluate(x, targets, batch_size=len(x), verbose=0, return_dict=True)
        assert task_loss == pytest.approx(whole["label_loss"], rel=1e-4)
    assert task_loss < loss, "auxiliary heads and penalties are what the task loss leaves out"
    definition = loss_definition(experiment)
    assert "Keras' training loss" in definition and "task_loss" in definition
    if dataset == "cifar10":
        assert "+ 0.3 x the same on auxiliary classifier 1 + 0.1 x the same on auxiliary classifier 2" in definition
    else:
        assert "L2 penalty" in definition


# ---- history's seconds ----------------------------------------------------------------------------

def test_history_seconds_are_cumulative_over_the_epochs_kept():
    # Epoch 2 was logged, the run killed before it was saved, and trained again on resume.
    history = [{"epoch": 1, "epoch_seconds": 2.0, "val_accuracy": 0.5},
               {"epoch": 2, "epoch_seconds": 9.0, "val_accuracy": 0.6},
               {"epoch": 2, "epoch_seconds": 3.0, "val_accuracy": 0.7},
               {"epoch": 3, "epoch_seconds": 4.0, "val_accuracy": 0.8}]
    table = pd.read_csv(io.StringIO(history_csv(history)))
    assert table["seconds"].tolist() == [2.0, 5.0, 9.0]
    assert table["val_accuracy"].tolist() == [0.5, 0.7, 0.8]


def test_epoch_seconds_leave_the_validation_pass_out(params, tmp_path):
    import time

    from tests.unit.test_strategies import batches, make_experiment
    from transferbench.training.fit import fit
    from transferbench.training.train import EpochSeconds

    class Wall(keras.callbacks.Callback):
        """The whole epoch, validation included: opens before EpochSeconds and closes before it reports."""

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            walls.append(time.perf_counter() - self.start)

    class SlowValidation(keras.callbacks.Callback):
        def on_test_batch_end(self, batch, logs=None):
            time.sleep(1.0)

    walls: list[float] = []
    experiment = make_experiment(params, epochs=2)
    history = fit(experiment, None, *batches(experiment), tmp_path / "work",
                  extra_callbacks=[Wall(), EpochSeconds(8), SlowValidation()], verbose=0)
    for row, wall in zip(history, walls, strict=True):  # one validation batch an epoch, slowed by a second
        assert row["validation_seconds"] >= 1.0
        # Training time is the epoch less its validation pass, however loaded the machine is.
        assert row["epoch_seconds"] + row["validation_seconds"] == pytest.approx(wall, abs=0.05)
        assert row["images_per_second"] == pytest.approx(8 / row["epoch_seconds"])


# ---- initial weights: one per source, whatever the settings -------------------------------------

def test_weights_stage_prepares_each_source_once_and_settings_share_it(params, tmp_path, monkeypatch):
    import stages.weights
    from transferbench.core import paths
    from transferbench.models.backbones import build_core
    from transferbench.study.runs import init_dir

    params["experiments"] = {"x": entry(strategy="frozen")}
    params["cats_and_dogs_filtered"].update(height=32, width=32)
    build_core("tiny", (32, 32, 3)).save_weights(tmp_path / "start.weights.h5")
    params.update(weights=[str(tmp_path / "start.weights.h5"), "none"], fixed_features=True)
    checked = check_params(params)
    monkeypatch.setattr(paths, "MODELS", tmp_path / "models")
    prepared: list = []
    real = stages.weights.prepare_init
    monkeypatch.setattr(stages.weights, "prepare_init", lambda e, out: prepared.append(out) or real(e, out))

    stages.weights.prepare_arms(checked, "x")

    assert [p.name for p in prepared] == ["file-start.weights.h5", "none"]
    arms = runs(checked, "x")
    assert [run_name(r) for r in arms] == ["file-start.weights.h5-s42", "file-start.weights.h5-tuned-s42", "none-s42"]
    assert init_dir(arms[0]) == init_dir(arms[1]) and (init_dir(arms[1]) / "weights.weights.h5").is_file()


def test_stages_whose_runs_follow_the_arms_rerun_when_fixed_features_changes():
    import yaml

    from transferbench.core import paths

    stages = yaml.safe_load((paths.ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for name in ("train", "evaluate", "report"):
        stage = stages[name].get("do", stages[name])
        assert "fixed_features" in stage["params"], name
