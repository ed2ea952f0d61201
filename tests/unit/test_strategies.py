"""Strategies freeze what they claim, keep frozen BatchNorm in inference mode, and two_phase resumes.

The tiny test backbone (Conv-BatchNorm-ReLU twice) stands in for Xception: the rules act on layer
indices and BatchNormalization layers, which it has; one slow test repeats the BatchNorm rule on
Xception itself.
"""

from __future__ import annotations

import dataclasses
import hashlib

import keras
import numpy as np
import pytest

from tests.tiny_backbone import TINY_LAYERS
from transferbench.core.errors import ConfigError
from transferbench.core.files import read_json
from transferbench.models import strategies
from transferbench.models.backbones import core_of
from transferbench.study.experiments import resolve
from transferbench.study.params import check_params
from transferbench.training.batches import ArrayBatches
from transferbench.training.fit import build_model, compile_model, fit


def entry(**overrides) -> dict:
    """A complete experiment entry (binary task, the tiny test backbone from scratch), changed by ``overrides``."""
    values = {"dataset": "cats_and_dogs_filtered", "model": "tiny", "pooling": "max", "head": "dense",
              "head_units": 0, "head_dropout": 0.0, "head_l2": 0.0, "strategy": "full", "augment": "none",
              "optimizer": "sgd", "learning_rate": 0.01, "batch_size": 4, "epochs": 3,
              "schedule": {"kind": "constant"}}
    values.update(overrides)
    return values


def make_experiment(params, size: int = 32, **overrides):
    """The real params with one experiment ``x`` (checked as a user's would be), images size x size.

    Its own recipe from random weights: the `none` arm would train in full (setting random), and the
    strategy rules act alike whatever weights the base starts from.
    """
    params["weights"] = "none"
    params["cats_and_dogs_filtered"].update(height=size, width=size)
    params["experiments"] = {"x": entry(**overrides)}
    checked = check_params(params)
    return dataclasses.replace(resolve(checked, "x"), settings=checked.experiments["x"])


def ids(variables) -> set[int]:
    return {id(v) for v in variables}


def learnable(layers) -> set[int]:
    """The weights of ``layers`` that training may change: all but BatchNormalization's statistics."""
    return ids(w for layer in layers for w in layer.weights if w.name not in ("moving_mean", "moving_variance"))


def head_weights(model) -> set[int]:
    return ids(model.weights) - ids(core_of(model).weights)


# ---- which layers train ---------------------------------------------------------------------

@pytest.mark.jax
@pytest.mark.parametrize("strategy,extra,frozen_layers", [
    ("full", {}, 0),
    ("partial", {"freeze": 3}, 3),
    ("partial", {"freeze": 0.3}, 2),  # round(0.3 * 7)
    ("frozen", {}, 7),
    ("two_phase", {"head_epochs": 1, "fine_tune_learning_rate": 1e-4, "freeze": 2}, 7),  # phase 1: head only
])
def test_each_strategy_freezes_exactly_its_layers(params, strategy, extra, frozen_layers):
    experiment = make_experiment(params, strategy=strategy, head_units=8, **extra)
    model = build_model(experiment, None)
    core = core_of(model)
    assert [layer.name for layer in core.layers] == list(TINY_LAYERS)
    expected_core = learnable(core.layers[frozen_layers:])
    trainable = ids(model.trainable_weights)
    assert trainable & ids(core.weights) == expected_core
    assert head_weights(model) <= trainable, "the head always trains"
    assert len(head_weights(model)) == 4  # hidden Dense(8) + classifier: two kernels, two biases
    assert ids(model.non_trainable_weights) == ids(core.weights) - expected_core
    # Not vacuous: conv kernels and BatchNorm's gamma and beta of the part that trains.
    assert len(expected_core) == {0: 6, 2: 5, 3: 3, 7: 0}[frozen_layers]


@pytest.mark.jax
def test_two_phase_second_phase_unfreezes_all_but_freeze_and_batchnorm(params):
    experiment = make_experiment(params, strategy="two_phase", head_epochs=1, fine_tune_learning_rate=1e-4,
                                 freeze=2)
    model = build_model(experiment, None)
    core = core_of(model)
    assert not any(layer.trainable for layer in core.layers), "phase 1: the whole core is frozen"
    head, fine_tune = strategies.phases(experiment.settings)
    assert (head.end, fine_tune.start, fine_tune.learning_rate) == (1, 1, 1e-4)
    assert strategies.apply(model, fine_tune) is True
    assert strategies.apply(model, fine_tune) is False, "applying the same phase again changes nothing"
    for index, layer in enumerate(core.layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable == (index >= 2 and not is_bn), (index, layer.name)
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in core.layers[2:]) == 2


# ---- BatchNormalization of a frozen part stays in inference mode -----------------------------

def moving_means(core) -> dict[str, np.ndarray]:
    return {layer.name: np.array(layer.moving_mean) for layer in core.layers
            if isinstance(layer, keras.layers.BatchNormalization)}


def kernels(core) -> dict[str, np.ndarray]:
    return {layer.name: np.array(layer.weights[0]) for layer in core.layers
            if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)}


def train_one_epoch(model, shape, n=4):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, *shape)).astype("float32")
    model.fit(x, rng.integers(0, 2, n), batch_size=n, epochs=1, verbose=0)


@pytest.mark.parametrize("model,size,freeze", [
    pytest.param("tiny", 32, 3, marks=pytest.mark.jax),  # input, conv1 and bn1 frozen; the rest trains
    pytest.param("xception", 71, 60, marks=pytest.mark.slow),
])
def test_partial_keeps_frozen_batchnorm_in_inference_mode_and_trains_the_rest(params, model, size, freeze):
    experiment = make_experiment(params, size=size, model=model, strategy="partial", freeze=freeze,
                                 optimizer="adam", learning_rate=0.01)
    model = build_model(experiment, None)
    compile_model(model, experiment)
    core = core_of(model)
    frozen = {layer.name for layer in core.layers[:freeze]}
    means, weights = moving_means(core), kernels(core)
    for found in (means, weights):  # so that both sides of each check below are exercised
        assert set(found) & frozen and set(found) - frozen, f"{sorted(found)} vs frozen {sorted(frozen)}"
    train_one_epoch(model, experiment.image_shape)
    after_means, after_weights = moving_means(core), kernels(core)
    for name in means:
        unchanged = np.array_equal(means[name], after_means[name])
        assert unchanged == (name in frozen), f"moving mean of {name}: frozen part {name in frozen}"
    for name in weights:
        unchanged = np.array_equal(weights[name], after_weights[name])
        assert unchanged == (name in frozen), f"kernel of {name}: frozen part {name in frozen}"


@pytest.mark.jax
def test_two_phase_fine_tuning_trains_the_core_with_batchnorm_in_inference_mode(params):
    experiment = make_experiment(params, strategy="two_phase", head_epochs=1, fine_tune_learning_rate=0.01,
                                 freeze=0, optimizer="adam")
    model = build_model(experiment, None)
    strategies.apply(model, strategies.phases(experiment.settings)[1])
    compile_model(model, experiment, 0.01)
    core = core_of(model)
    means, weights = moving_means(core), kernels(core)
    train_one_epoch(model, experiment.image_shape)
    after_means, after_weights = moving_means(core), kernels(core)
    assert means and all(np.array_equal(means[n], after_means[n]) for n in means), "BN statistics must not move"
    assert all(not np.array_equal(weights[n], after_weights[n]) for n in weights), "every conv layer trains"


# ---- two_phase over model.fit, killed and resumed -------------------------------------------

class Probe(keras.callbacks.Callback):
    """Records (epoch, learning rate, trainable weight count) as each epoch begins, and optimizer steps."""

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[int, float, int]] = []
        self.steps: list[int] = []

    def on_epoch_begin(self, epoch, logs=None):
        rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.rows.append((epoch, pytest.approx(rate), len(self.model.trainable_weights)))
        self.steps.append(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))


class Kill(Exception):
    pass


class KillAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Kill()


def batches(experiment, n=8):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (n, *experiment.image_shape), dtype=np.uint8)
    targets = rng.integers(0, 2, n)
    return (ArrayBatches(images, targets, 4, shuffle=True, seed=experiment.seed),
            ArrayBatches(images[:4], targets[:4], 4))


class Recording(ArrayBatches):
    """Training batches that note what they serve: (epoch, index) -> sha256 of the batch's images.

    Keyed by position, not call order: on TensorFlow several threads gather batches ahead, and the
    pipeline delivers them in (epoch, index) order (tests/unit/test_batches.py).
    """

    def batch(self, epoch, index):
        x, y = super().batch(epoch, index)
        self.seen[(epoch, index)] = hashlib.sha256(x.tobytes()).hexdigest()
        return x, y


def recorded(experiment, n=24):
    train, validation = batches(experiment, n)
    recording = Recording(train.images, train.targets, 4, shuffle=True, seed=experiment.seed)
    recording.seen = {}
    return recording, validation


def straight_and_resumed(params, tmp_path, monkeypatch, pipeline: bool) -> dict:
    """Train 3 epochs straight and killed-then-resumed; check both read the same last epoch, and
    return the straight run's record. ``pipeline``: whether fit sees a GPU (TensorFlow's tf.data feed)."""
    from transferbench.core import backend

    monkeypatch.setattr(backend, "gpu_available", lambda: pipeline)
    experiment = make_experiment(params, epochs=3)
    straight, validation = recorded(experiment)
    fit(experiment, None, straight, validation, tmp_path / "straight", verbose=0)
    killed, validation = recorded(experiment)
    with pytest.raises(Kill):
        fit(experiment, None, killed, validation, tmp_path / "killed", extra_callbacks=[KillAtEpoch(2)], verbose=0)
    resumed, validation = recorded(experiment)
    fit(experiment, None, resumed, validation, tmp_path / "killed", verbose=0)
    n_batches, last = len(straight), max(straight.seen)[0]  # 6 batches; the batches' epoch of fit's third
    last_epoch = [straight.seen[(last, index)] for index in range(n_batches)]
    assert len(set(last_epoch)) == n_batches
    assert [resumed.seen[(last, index)] for index in range(n_batches)] == last_epoch
    assert max(resumed.seen) == (last, n_batches - 1), "the resumed run read no batch beyond the last epoch"
    return {key: sha for key, sha in straight.seen.items() if key[0] > last - 3}  # fit's 3 epochs, no probes


@pytest.mark.jax
@pytest.mark.parametrize("pipeline", [False, True], ids=["pydataset", "tf-pipeline"])
def test_a_resumed_run_trains_on_the_same_batches_in_the_same_order(params, tmp_path, monkeypatch, pipeline):
    """On a CPU fit feeds the PyDataset; with a GPU (stood in for here), TensorFlow's tf.data pipeline."""
    straight_and_resumed(params, tmp_path, monkeypatch, pipeline)


def test_cpu_and_gpu_feeds_give_fit_the_same_batches(params, tmp_path, monkeypatch):
    """A run may resume on other hardware: the PyDataset and the tf.data pipeline serve fit's epochs alike."""
    cpu, gpu = (straight_and_resumed(params, tmp_path / str(p), monkeypatch, p) for p in (False, True))
    assert len(cpu) == 18 and cpu == gpu


TWO_PHASE = dict(strategy="two_phase", head_epochs=2, fine_tune_learning_rate=0.001, freeze=0, epochs=4,
                 head_units=4)
# Trainable arrays: the head's 2 Dense layers / those and the core's 2 conv kernels (its BatchNorm stays frozen).
HEAD_ONLY, EVERYTHING = 4, 6


@pytest.mark.jax
def test_two_phase_switches_phase_and_rate_at_head_epochs(params, tmp_path):
    # Step decay every 2 epochs restarts from each phase's own rate.
    experiment = make_experiment(params, **TWO_PHASE, schedule={"kind": "step", "factor": 0.5, "every": 2})
    probe = Probe()
    history = fit(experiment, None, *batches(experiment), tmp_path / "work", extra_callbacks=[probe], verbose=0)
    assert probe.rows == [(0, 0.01, HEAD_ONLY), (1, 0.005, HEAD_ONLY),
                          (2, 0.001, EVERYTHING), (3, 0.0005, EVERYTHING)]
    assert [row["learning_rate"] for row in history] == pytest.approx([0.01, 0.005, 0.001, 0.0005])
    state = read_json(tmp_path / "work" / "state.json")
    assert state["phase"] == "fine_tune" and state["epoch"] == 4


class Scores(keras.callbacks.Callback):
    """Overrides each epoch's validation accuracy, so a test decides which epoch is best."""

    def __init__(self, scores):
        super().__init__()
        self.scores = scores

    def on_epoch_end(self, epoch, logs=None):
        logs["val_accuracy"] = self.scores[epoch]


@pytest.mark.jax
def test_two_phase_keeps_the_best_model_of_its_last_phase(params, tmp_path):
    import pandas as pd

    from transferbench.training.evaluation import best_of_last_phase
    from transferbench.training.fit import best_model

    experiment = make_experiment(params, **TWO_PHASE)
    # The frozen phase validates best (epoch 1), but the fine-tuned arm must be scored on a fine-tuned model.
    history = fit(experiment, None, *batches(experiment), tmp_path / "work",
                  extra_callbacks=[Scores([0.9, 0.8, 0.6, 0.5])], verbose=0)
    assert best_model(tmp_path / "work").name == "epoch-0003.keras"
    assert best_of_last_phase(pd.DataFrame(history), strategies.phases(experiment.settings)) == (3, "fine_tune")


@pytest.mark.jax
@pytest.mark.parametrize("kill_at,phase_saved", [(3, "fine_tune"), (2, "head")])
def test_two_phase_resumes_in_the_right_phase_after_a_kill(params, tmp_path, kill_at, phase_saved):
    """Killed inside phase 2, or between the phases: the resumed model is unfrozen at the fine-tune rate."""
    experiment = make_experiment(params, **TWO_PHASE)
    work = tmp_path / "work"
    with pytest.raises(Kill):
        fit(experiment, None, *batches(experiment), work, extra_callbacks=[KillAtEpoch(kill_at)], verbose=0)
    before = read_json(work / "state.json")
    assert (before["epoch"], before["phase"]) == (kill_at, phase_saved)

    probe = Probe()
    history = fit(experiment, None, *batches(experiment), work, extra_callbacks=[probe], verbose=0)
    assert probe.rows == [(epoch, 0.001, EVERYTHING) for epoch in range(kill_at, 4)]
    # Inside phase 2 the saved optimizer carries on (2 steps per epoch); between phases a fresh one starts.
    assert probe.steps[0] == (2 * (kill_at - 2) if phase_saved == "fine_tune" else 0)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert history[:kill_at] == before["history"], "finished epochs are kept, not retrained"
    assert [row["learning_rate"] for row in history] == pytest.approx([0.01, 0.01, 0.001, 0.001])
    assert read_json(work / "state.json")["phase"] == "fine_tune"


@pytest.mark.jax
def test_step_schedule_survives_a_kill(params, tmp_path):
    schedule = {"kind": "step", "factor": 0.5, "every": 1}
    experiment = make_experiment(params, epochs=3, schedule=schedule)
    with pytest.raises(Kill):
        fit(experiment, None, *batches(experiment), tmp_path / "work", extra_callbacks=[KillAtEpoch(2)], verbose=0)
    resumed = fit(experiment, None, *batches(experiment), tmp_path / "work", verbose=0)
    # Reference study 004's formula: epoch n (from 1) at rate * factor ** floor(n / every); epochs 1-2 come from
    # the killed run's history, epoch 3 from the resumed one.
    assert [row["learning_rate"] for row in resumed] == pytest.approx([0.005, 0.0025, 0.00125])


# ---- what params checking leaves to the stage that builds the core ---------------------------

@pytest.mark.jax
def test_train_refuses_a_freeze_beyond_the_core_before_any_work(params, monkeypatch, tmp_path):
    from transferbench import cli
    from transferbench.training import train

    make_experiment(params, strategy="partial", freeze=200)  # valid params: the count needs the core
    checked = check_params(params)
    n_layers = len(TINY_LAYERS)
    with pytest.raises(ConfigError, match=rf"^experiments\.x\.freeze is 200 but tiny's core has {n_layers} layers; "
                                          rf"accepted for partial: a layer count from 1 to {n_layers - 1}"):
        train.run(checked, "x", work_root=tmp_path / "tmp")
    assert not (tmp_path / "tmp").exists()
    monkeypatch.setattr(cli, "load_params", lambda: checked)
    with pytest.raises(SystemExit, match=r"^train@x: error: experiments\.x\.freeze is 200"):  # one line, no traceback
        cli.stage_main("train", ["x"], train.run)
