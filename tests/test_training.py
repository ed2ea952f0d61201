"""Training: mean-of-heads monitoring, resume after a kill, history and evaluation metrics."""

from __future__ import annotations

import numpy as np
from stages.io import read_json
import pytest

from stages.datasets import Task, load_split
from stages.evaluate import task_metrics
from stages.experiments import resolve
from stages.feed import ArrayBatches
from stages.train import history_csv
from stages.training import EpochSummary, fit

from conftest import write_prepared_captcha


def test_epoch_summary_means_all_heads_not_the_first():
    callback = EpochSummary(["head0", "head1", "head2"])

    class FakeOptimizer:
        learning_rate = np.float32(0.5)

    class FakeModel:
        optimizer = FakeOptimizer()

    callback.set_model(FakeModel())
    logs = {"head0_accuracy": 0.9, "head1_accuracy": 0.3, "head2_accuracy": 0.0,
            "val_head0_accuracy": 1.0, "val_head1_accuracy": 0.5, "val_head2_accuracy": 0.0}
    callback.on_epoch_end(0, logs)
    assert logs["accuracy"] == pytest.approx(0.4) and logs["val_accuracy"] == pytest.approx(0.5)
    assert logs["learning_rate"] == pytest.approx(0.5)


def test_batches_shuffle_by_seed_and_epoch_only():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    a = ArrayBatches(images, np.arange(10), 4, shuffle=True, seed=3)
    b = ArrayBatches(images, np.arange(10), 4, shuffle=True, seed=3, epoch=1)
    first = [a[i][1].tolist() for i in range(len(a))]
    a.on_epoch_end()
    assert [a[i][1].tolist() for i in range(len(a))] == [b[i][1].tolist() for i in range(len(b))]
    assert sorted(sum(first, [])) == list(range(10))
    assert first != [b[i][1].tolist() for i in range(len(b))]


def test_history_keeps_the_last_row_of_a_repeated_epoch():
    csv = history_csv([{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5}, {"epoch": 2, "loss": 1.0}])
    assert csv == "epoch,loss\n1,2.0\n2,1.0\n"


def test_task_metrics_for_captcha_heads():
    targets = np.array([[0, 1], [1, 1], [0, 0]])
    one_hot = lambda idx: np.eye(3)[idx] * 0.9 + 0.1 / 3  # noqa: E731 - confident, never zero
    predictions = [one_hot(np.array([0, 1, 1])), one_hot(np.array([1, 1, 0]))]
    metrics = task_metrics(Task("multihead", 3, 2), targets, predictions, "sparse_categorical_crossentropy")
    assert metrics["accuracy"] == pytest.approx(5 / 6)
    assert metrics["sequence_accuracy"] == pytest.approx(2 / 3)
    assert metrics["position_accuracy"] == {"head0": pytest.approx(2 / 3), "head1": 1.0}
    right, wrong = -np.log(0.9 + 0.1 / 3), -np.log(0.1 / 3)
    # Keras' total: the sum over heads of each head's mean cross-entropy (head0 has one miss).
    assert metrics["loss"] == pytest.approx((2 * right + wrong) / 3 + right, rel=1e-5)


def tiny_experiment(params, tmp_path, monkeypatch):
    from stages import paths

    params["weights"] = "none"
    params["captcha"].update(width=32, height=32, train=24, validation=8, test=8)
    params["experiments"]["captcha"].update(model="cnn", epochs=3, batch_size=8,
                                            reduce_lr={"factor": 0.5, "patience": 0, "min_lr": 1e-6})
    monkeypatch.setattr(paths, "PREPARED", tmp_path / "prepared")
    write_prepared_captcha(tmp_path / "prepared" / "captcha", {"train": 24, "validation": 8},
                           params["captcha"])
    experiment = resolve(params, "captcha")

    def batches():
        out = {}
        for split in ("train", "validation"):
            images, manifest = load_split("captcha", split)
            out[split] = ArrayBatches(images, experiment.spec.targets(manifest, experiment.dataset_values),
                                      8, n_outputs=6, shuffle=split == "train", seed=experiment.seed)
        return out

    return experiment, batches


class Kill(Exception):
    pass


def test_killed_training_resumes_from_its_last_epoch(params, tmp_path, monkeypatch):
    import keras

    experiment, batches = tiny_experiment(params, tmp_path, monkeypatch)

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
    assert (tmp_path / "work" / "best.keras").exists()
