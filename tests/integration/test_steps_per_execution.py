"""Several training steps per call of the train function (models.catalog's steps_per_execution) change no result.

With a GPU the small CNN trains up to its steps_per_execution steps per call, a count that divides an epoch's
steps. Here, on the CPU (where training keeps one step per call), the tiny backbone is given a count, to
compare a run trained that way with the same run one step per call: the same weights, the same history
(losses, accuracies, the learning rate the plateau schedule cut after each epoch) and the same best epoch,
with the project's callbacks (fit's epoch timing and summary among them) all attached.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.fixture_data import write_prepared_captcha
from transferbench.data.datasets import read_manifest
from transferbench.models.backbones import load_model
from transferbench.models.catalog import MODELS
from transferbench.study.experiments import resolve
from transferbench.study.params import check_params
from transferbench.training import fit as fitting
from transferbench.training.batches import ArrayBatches

TIMES = {"epoch_seconds", "validation_seconds", "images_per_second"}


def test_the_count_per_call_divides_the_epochs_steps(monkeypatch):
    cnn = MODELS.get("cnn")
    assert cnn.steps_per_execution > 1
    for steps in (1, 7, 12, 100, 113, 2000 // 20, 200_000 // 16):
        count = cnn.steps_per_call(steps)
        assert 1 <= count <= min(cnn.steps_per_execution, steps) and steps % count == 0, steps
        assert not any(steps % d == 0 for d in range(count + 1, min(cnn.steps_per_execution, steps) + 1)), steps
    assert cnn.steps_per_call(7) == 7 and cnn.steps_per_call(113) == 1  # 113 is prime
    assert MODELS.get("xception").steps_per_call(100) == 1  # no count of its own: one step per call
    monkeypatch.setattr(fitting.backend, "gpu_available", lambda: True)
    assert fitting.steps_per_call("cnn", 100) == 10  # training takes the count with a GPU
    monkeypatch.setattr(fitting.backend, "gpu_available", lambda: False)
    assert fitting.steps_per_call("cnn", 100) == 1  # and one step per call on a CPU


class Calls(keras.callbacks.Callback):
    """How many times Keras called the batch hook per epoch, and the count the model was compiled with."""

    def __init__(self):
        super().__init__()
        self.batches: list[int] = []
        self.compiled: list[int] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.append(0)
        self.compiled.append(self.model.steps_per_execution)

    def on_train_batch_end(self, batch, logs=None):
        self.batches[-1] += 1


@pytest.mark.slow  # two short trainings, each traced anew: ~5 s of CPU, more than the default set has left
@pytest.mark.jax
def test_three_steps_per_call_train_the_run_one_step_per_call_trains(params, tmp_path, monkeypatch):
    params["weights"] = "none"
    params["captcha"].update(width=32, height=32, train=24, validation=8, test=8)
    params["experiments"]["captcha"].update(
        model="tiny", epochs=2, batch_size=8,
        schedule={"kind": "plateau", "factor": 0.5, "patience": 0, "min_lr": 1e-6, "monitor": "val_loss"})
    prepared = write_prepared_captcha(tmp_path / "prepared", {"train": 24, "validation": 8}, params["captcha"])
    experiment = resolve(check_params(params), "captcha")

    def batches(split: str) -> ArrayBatches:
        images = np.load(prepared / split / "images.npy", mmap_mode="r")
        targets = experiment.spec.targets(read_manifest(prepared / split / "manifest.csv"),
                                          experiment.dataset_settings)
        return ArrayBatches(images, targets, 8, n_outputs=6, shuffle=split == "train", seed=experiment.seed)

    trained = {}
    for count in (1, 3):  # 24 images at batch 8: three steps an epoch, one call of three steps
        monkeypatch.setattr(fitting, "steps_per_call", lambda model, steps, count=count: count)
        calls, work_dir = Calls(), tmp_path / f"x{count}"
        history = fitting.fit(experiment, None, batches("train"), batches("validation"), work_dir,
                              extra_callbacks=[calls], verbose=0)
        assert calls.compiled == [count] * 2 and calls.batches == [3 // count] * 2
        trained[count] = (history, load_model(fitting.best_model(work_dir), compile=False).get_weights())

    (history_1, weights_1), (history_3, weights_3) = trained[1], trained[3]
    assert all(row["epoch_seconds"] > 0 for row in history_3)
    assert [{k: v for k, v in row.items() if k not in TIMES} for row in history_1] \
        == [{k: v for k, v in row.items() if k not in TIMES} for row in history_3]
    for a, b in zip(weights_1, weights_3, strict=True):
        assert np.array_equal(a, b)
