"""Training: mean-of-heads monitoring, resume after a kill, history and evaluation metrics;
auxiliary outputs (GoogLeNet's, and the tiny test backbone's in the default run), the SVM head's
loss, augmentation in training only."""

from __future__ import annotations

import types

import numpy as np
import pytest

from tests.fixture_data import write_prepared_captcha
from transferbench.core.files import read_json
from transferbench.data.datasets import Task, read_manifest
from transferbench.models.assembly import assemble_model
from transferbench.models.backbones import build_core, load_model
from transferbench.models.catalog import MODELS, HeadOptions
from transferbench.models.heads import head_spec, task_outputs
from transferbench.study.experiments import resolve
from transferbench.study.params import check_params
from transferbench.training.batches import ArrayBatches
from transferbench.training.evaluation import task_metrics
from transferbench.training.fit import EpochSummary, best_model, compile_model, fit
from transferbench.training.train import history_csv


def summarised(heads: list[str], learning_rate: float, logs: dict) -> dict:
    """``logs`` after EpochSummary's epoch end, on a model stand-in that has only an optimizer."""
    callback = EpochSummary(heads)
    callback.set_model(types.SimpleNamespace(optimizer=types.SimpleNamespace(learning_rate=np.float32(learning_rate))))
    callback.on_epoch_end(0, logs)
    return logs


@pytest.mark.jax
def test_epoch_summary_means_all_heads_not_the_first():
    logs = summarised(["head0", "head1", "head2"], 0.5, {
        "head0_accuracy": 0.9, "head1_accuracy": 0.3, "head2_accuracy": 0.0,
        "val_head0_accuracy": 1.0, "val_head1_accuracy": 0.5, "val_head2_accuracy": 0.0})
    assert logs["accuracy"] == pytest.approx(0.4) and logs["val_accuracy"] == pytest.approx(0.5)
    assert logs["learning_rate"] == pytest.approx(0.5)


@pytest.mark.jax
def test_batches_shuffle_by_seed_and_epoch_only():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    a = ArrayBatches(images, np.arange(10), 4, shuffle=True, seed=3)
    b = ArrayBatches(images, np.arange(10), 4, shuffle=True, seed=3, epoch=1)
    first = [a[i][1].tolist() for i in range(len(a))]
    a.on_epoch_end()
    assert [a[i][1].tolist() for i in range(len(a))] == [b[i][1].tolist() for i in range(len(b))]
    assert sorted(sum(first, [])) == list(range(10))
    assert first != [b[i][1].tolist() for i in range(len(b))]


@pytest.mark.jax
def test_history_keeps_the_last_row_of_a_repeated_epoch():
    csv = history_csv([{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5}, {"epoch": 2, "loss": 1.0}])
    assert csv == "epoch,loss,seconds\n1,2.0,0.0\n2,1.0,0.0\n"  # no epoch_seconds logged: no time counted


@pytest.mark.jax
def test_task_metrics_for_captcha_heads():
    targets = np.array([[0, 1], [1, 1], [0, 0]])
    one_hot = lambda idx: np.eye(3)[idx] * 0.9 + 0.1 / 3  # noqa: E731 - confident, never zero
    predictions = [one_hot(np.array([0, 1, 1])), one_hot(np.array([1, 1, 0]))]
    task, head = Task("multihead", 3, 2), head_spec("dense")
    metrics = task_metrics(task, targets, head.predicted_classes(task, predictions))
    assert metrics["accuracy"] == pytest.approx(5 / 6)
    assert metrics["sequence_accuracy"] == pytest.approx(2 / 3)
    assert metrics["position_accuracy"] == {"head0": pytest.approx(2 / 3), "head1": 1.0}


@pytest.mark.jax
@pytest.mark.parametrize("head, scores, decided", [
    ("dense", [0.9, 0.2, 0.6, 0.4], [1, 0, 1, 0]),   # probabilities: threshold 0.5
    ("svm", [0.3, -0.2, -0.1, 0.8], [1, 0, 0, 1]),    # margins: threshold 0
])
def test_task_metrics_for_a_binary_head(head, scores, decided):
    targets = np.array([1, 0, 0, 0])
    predictions = [np.array(scores, dtype="float32").reshape(-1, 1)]  # one unit: (n, 1)
    task, spec = Task("binary", 2), head_spec(head)
    metrics = task_metrics(task, targets, spec.predicted_classes(task, predictions))
    assert metrics["accuracy"] == pytest.approx(np.mean(np.array(decided) == targets)) and metrics["n"] == 4


def tiny_experiment(params, tmp_path):
    """The CAPTCHA experiment on the tiny backbone (BatchNorm, as Xception), on small prepared data."""
    params["weights"] = "none"
    params["captcha"].update(width=32, height=32, train=24, validation=8, test=8)
    params["experiments"]["captcha"].update(model="tiny", epochs=3, batch_size=8,
                                            schedule={"kind": "plateau", "factor": 0.5, "patience": 0,
                                                      "min_lr": 1e-6})
    prepared = write_prepared_captcha(tmp_path / "prepared" / "captcha", {"train": 24, "validation": 8},
                                      params["captcha"])
    experiment = resolve(check_params(params), "captcha")

    def batches():
        out = {}
        for split in ("train", "validation"):
            images = np.load(prepared / split / "images.npy", mmap_mode="r")  # as training reads it
            manifest = read_manifest(prepared / split / "manifest.csv")
            out[split] = ArrayBatches(images, experiment.spec.targets(manifest, experiment.dataset_settings),
                                      8, n_outputs=6, shuffle=split == "train", seed=experiment.seed)
        return out

    return experiment, batches


class Kill(Exception):
    pass


@pytest.mark.jax
def test_killed_training_resumes_from_its_last_epoch(params, tmp_path):
    import keras

    experiment, batches = tiny_experiment(params, tmp_path)

    class KillAtEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise Kill()

    data = batches()
    with pytest.raises(Kill):
        fit(experiment, None, data["train"], data["validation"], tmp_path / "work",
            extra_callbacks=[KillAtEpoch()], verbose=0)
    before = read_json(tmp_path / "work" / "state.json")
    assert before["epoch"] == 2

    data = batches()
    history = fit(experiment, None, data["train"], data["validation"], tmp_path / "work", verbose=0)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[:2] == list(before["history"]), "finished epochs are kept, not retrained"
    # patience 0 halves the rate after any epoch without improvement; the resumed run must
    # continue from the rate the killed run had reached, not from the initial 1e-3.
    assert history[2]["learning_rate"] <= history[1]["learning_rate"]
    assert best_model(tmp_path / "work").exists()


@pytest.mark.jax
def test_epoch_summary_scores_the_main_output_not_the_auxiliary_ones():
    logs = summarised(["label"], 0.01, {
        "label_accuracy": 0.8, "aux1_accuracy": 0.2, "aux2_accuracy": 0.5,
        "val_label_accuracy": 0.7, "val_aux1_accuracy": 0.1, "val_aux2_accuracy": 0.4})
    assert logs["accuracy"] == 0.8 and logs["val_accuracy"] == 0.7


def photo_experiment(params, dataset: str, size: int, **values):
    """The real params with one experiment ``x`` on ``dataset`` at size x size, random initialisation."""
    params["weights"] = "none"
    params[dataset].update(height=size, width=size)
    params["experiments"] = {"x": {
        "dataset": dataset, "model": "cnn", "pooling": "max", "head": "dense", "head_units": 0,
        "head_dropout": 0.0, "head_l2": 0.0, "strategy": "full", "augment": "none", "optimizer": "sgd",
        "learning_rate": 0.01, "batch_size": 4, "epochs": 1, "schedule": {"kind": "constant"}, **values}}
    return resolve(check_params(params), "x")


@pytest.mark.parametrize("model", [pytest.param("tiny_aux", marks=pytest.mark.jax),
                                   pytest.param("googlenet", marks=pytest.mark.slow)])
def test_aux_outputs_weigh_their_loss_weights_and_val_accuracy_is_the_main_heads(params, tmp_path, model):
    """GoogLeNet's auxiliary classifiers weigh 0.3 each; the tiny backbone's 0.3 and 0.1 (same code)."""

    experiment = photo_experiment(params, "cifar10", 32, model=model, pooling="avg", head_dropout=0.4)
    aux1_weight, aux2_weight = MODELS.get(model).aux_loss_weights
    if model == "googlenet":
        assert (aux1_weight, aux2_weight) == (0.3, 0.3), "reference study 004's weights"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    targets = rng.integers(0, 10, 8)
    history = fit(experiment, None, ArrayBatches(images, targets, 4), ArrayBatches(images, targets, 4),
                  tmp_path / "work", verbose=0)
    row = history[0]
    assert {"val_label_accuracy", "val_aux1_accuracy", "val_aux2_accuracy"} <= set(row)
    assert row["val_accuracy"] == row["val_label_accuracy"]
    assert row["accuracy"] == row["label_accuracy"]

    model = load_model(best_model(tmp_path / "work"))
    assert list(model.output_names) == ["label", "aux1", "aux2"]
    scores = model.evaluate(images, (targets, targets, targets), verbose=0, return_dict=True)
    weighted = scores["label_loss"] + aux1_weight * scores["aux1_loss"] + aux2_weight * scores["aux2_loss"]
    assert scores["loss"] == pytest.approx(weighted, rel=1e-4)
    assert scores["loss"] != pytest.approx(scores["label_loss"] + scores["aux1_loss"] + scores["aux2_loss"], rel=1e-3)

    predictions = model.predict(images, verbose=0)
    (main,) = task_outputs(model, predictions, experiment.task)
    np.testing.assert_array_equal(main, predictions[0])


def squared_hinge(margins: np.ndarray, labels: np.ndarray) -> float:
    signs = np.where(np.eye(margins.shape[1])[labels] > 0, 1.0, -1.0) if margins.shape[1] > 1 else \
        (2.0 * labels - 1.0)[:, None]
    return float(np.mean(np.mean(np.maximum(0.0, 1.0 - signs * margins) ** 2, axis=1)))


@pytest.mark.jax
@pytest.mark.parametrize("dataset,size,n_classes", [("pets", 32, 3), ("cats_and_dogs_filtered", 32, 2)])
def test_svm_head_loss_is_squared_hinge_and_it_trains(params, dataset, size, n_classes):
    experiment = photo_experiment(params, dataset, size, head="svm", head_l2=0.01)
    task = experiment.task
    model = assemble_model("cnn", build_core("cnn", experiment.image_shape), experiment.image_shape, task,
                           pooling="max", head="svm", head_options=HeadOptions(l2=0.01))
    compile_model(model, experiment)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (6, size, size, 3)).astype("float32")
    y = np.arange(6) % n_classes
    margins = model.predict(x, verbose=0)
    kernel = np.asarray(model.get_layer("label").kernel)
    expected = squared_hinge(margins, y) + 0.01 * float(np.sum(kernel ** 2))
    scores = model.evaluate(x, y, verbose=0, return_dict=True)
    assert scores["loss"] == pytest.approx(expected, rel=1e-4)
    rule = head_spec("svm").predicted_classes(task, [margins])[:, 0]
    assert scores["accuracy"] == pytest.approx(np.mean(rule == y)), "accuracy follows the margin's sign"

    before = kernel.copy()
    loss = model.train_on_batch(x, y)
    loss = loss[0] if isinstance(loss, (list, tuple)) else loss
    assert np.isfinite(loss)
    assert not np.array_equal(before, np.asarray(model.get_layer("label").kernel))


@pytest.mark.jax
def test_flip_augmentation_acts_in_training_only(params):
    import keras

    experiment = photo_experiment(params, "cats_and_dogs_filtered", 32, augment="flip", pooling="flatten")
    from transferbench.training.fit import build_model

    keras.utils.set_random_seed(0)
    model = build_model(experiment, None)
    x = np.random.default_rng(4).integers(0, 256, (16, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_allclose(np.asarray(model(x, training=False)), model.predict(x, verbose=0), rtol=1e-5)

    flipped = np.asarray(model.get_layer("augment")(x, training=True))
    same = [np.array_equal(flipped[i], x[i]) for i in range(16)]
    mirrored = [np.array_equal(flipped[i], x[i, :, ::-1]) for i in range(16)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True)), "only horizontal flips"
    assert any(mirrored) and any(same)
    assert not np.allclose(np.asarray(model(x, training=True)), np.asarray(model(x, training=False)))

    plain = photo_experiment(params, "cats_and_dogs_filtered", 32, augment="none")
    assert "augment" not in [layer.name for layer in build_model(plain, None).layers]


@pytest.mark.jax
@pytest.mark.parametrize(("threshold", "scores", "expected"), [
    (None, [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]], (2 / 3 + 1) / 2),  # argmax: one cat called a dog
    (0.5, [[0.1], [0.2], [0.7], [0.6]], (2 / 3 + 1) / 2),  # a sigmoid unit, class 1 above 0.5
    (0.0, [[-1.0], [-2.0], [0.5], [-0.1]], (2 / 3 + 0) / 2),  # an SVM margin, class 1 above 0: the dog missed
])
def test_balanced_accuracy_is_the_mean_recall_by_the_heads_rule(threshold, scores, expected):
    from transferbench.models.custom_objects import BalancedAccuracy

    metric = BalancedAccuracy(2, threshold=threshold)
    metric.update_state(np.array([0, 0, 0, 1]), np.array(scores, dtype="float32"))
    assert float(metric.result()) == pytest.approx(expected)
    metric.reset_state()
    metric.update_state(np.array([1]), np.array([scores[2]], dtype="float32"))  # a class never seen counts for nothing
    assert float(metric.result()) == pytest.approx(1.0)


@pytest.mark.jax
def test_balanced_class_weights_checkpoint_on_balanced_accuracy_and_resume(params, tmp_path):
    from tests.unit import test_strategies as strategies_test
    from transferbench.study.experiments import BALANCED_MONITOR, monitor

    make_experiment, batches = strategies_test.make_experiment, strategies_test.batches
    experiment = make_experiment(params, epochs=3, class_weight="balanced")
    assert monitor(experiment.settings) == BALANCED_MONITOR
    with pytest.raises(strategies_test.Kill):
        fit(experiment, None, *batches(experiment), tmp_path / "work", extra_callbacks=[strategies_test.KillAtEpoch(2)],
            verbose=0)
    history = fit(experiment, None, *batches(experiment), tmp_path / "work", verbose=0)  # reloads the metric
    scores = [row[BALANCED_MONITOR] for row in history]
    state = read_json(tmp_path / "work" / "state.json")
    assert len(scores) == 3 and state["checkpoint_best"] == max(scores)
