"""Data parallel on one machine: two virtual CPU devices train the same weights as one device.

Device setup is process-wide (XLA reads its flags when JAX starts; TensorFlow fixes its logical
devices when its runtime starts, and JAX keeps Keras' distribution globally), so every training run
is a subprocess: this module run as a script (``python -m tests.integration.test_distribution``),
on whichever backend the environment has (KERAS_BACKEND, as Keras reads it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from transferbench.core import paths
from transferbench.core.errors import ConfigError
from transferbench.training.distribution import FullBatches, PaddedBatches, Placement, UnpaddedLoss

pytestmark = pytest.mark.jax

DEVICES = 2
BATCH = 4
TRAIN, VALIDATION = 18, 7  # 4 full batches and one of 2 (dropped in data parallel); validation 4 + 3 (padded)
EPOCHS = 2

# Relative and absolute tolerance on every weight after EPOCHS x 4 steps. Both runs take the same steps
# on the same images; what differs is where float32 sums are cut: each device reduces its half of the
# batch and the halves are then added (gradients, BatchNorm moments), against one sum over the whole
# batch. That changes the last bits (~1e-7 relative) of each step; Adam scales every update to about its
# learning rate whatever the gradient's size, so those bits do not grow into more than the last bits of
# the weights. Measured: at most 5e-8 apart on either backend, weights up to 1. A real difference is far
# above 1e-5: one step on a partial batch moves weights by 1e-2 (test_a_step_on_the_partial_batch_would_show),
# as would BatchNorm statistics of one device's half.
TOLERANCE = 1e-5


def experiment_params(batch_size: int = BATCH) -> dict:
    """The repository's params with the CAPTCHA experiment on the tiny backbone (BatchNorm, as Xception)."""
    import yaml

    params = yaml.safe_load(paths.PARAMS.read_text(encoding="utf-8"))
    params["weights"] = "none"
    params["captcha"].update(width=16, height=16, train=TRAIN, validation=VALIDATION, test=4)
    params["experiments"]["captcha"].update(model="tiny", epochs=EPOCHS, batch_size=batch_size, head_l2=0.01,
                                            schedule={"kind": "constant"})
    return params


def worker(kind: str, out: Path, train_images: int) -> None:
    """One training run with distribution ``kind`` on the first ``train_images`` images; results under ``out``."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        (cpu,) = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * DEVICES)

    import tests.tiny_backbone  # noqa: F401 - registers the tiny backbone, as conftest does in pytest
    from tests.fixture_data import write_prepared_captcha
    from transferbench.data.datasets import read_manifest
    from transferbench.models.backbones import load_model
    from transferbench.study.experiments import resolve
    from transferbench.study.params import check_params
    from transferbench.training import distribution, train
    from transferbench.training.batches import ArrayBatches
    from transferbench.training.fit import finish, fit

    result: dict = {"backend": keras.backend.backend()}
    if kind == distribution.DATA_PARALLEL:
        # The stage refuses a global batch the devices cannot split, before it reads any data.
        bad = experiment_params(batch_size=5)
        bad["distribution"] = kind
        try:
            train.run(check_params(bad), "captcha", work_root=out / "refused")
        except ConfigError as err:
            result["refusal"] = str(err)

    params = experiment_params()
    params["distribution"] = kind
    experiment = resolve(check_params(params), "captcha")
    placement = distribution.activate(kind)
    result["describe"] = distribution.describe(BATCH)
    prepared = write_prepared_captcha(out / "prepared", {"train": TRAIN, "validation": VALIDATION},
                                      params["captcha"])
    feeds = {}
    for split, n in (("train", train_images), ("validation", VALIDATION)):
        images = np.load(prepared / split / "images.npy", mmap_mode="r")[:n]
        targets = experiment.spec.targets(read_manifest(prepared / split / "manifest.csv"),
                                          experiment.dataset_settings)[:n]
        feeds[split] = ArrayBatches(images, targets, BATCH, n_outputs=experiment.task.n_outputs)
    if kind == distribution.DATA_PARALLEL:
        # Killed after its first epoch and resumed: the model is loaded back into the placement.
        class Kill(Exception):
            pass

        class KillAtSecondEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == 1:
                    raise Kill()

        try:
            fit(experiment, None, feeds["train"], feeds["validation"], out / "work", verbose=0,
                extra_callbacks=[KillAtSecondEpoch()], placement=placement)
        except Kill:
            result["resumed"] = json.loads((out / "work" / "state.json").read_text())["epoch"]
    history = fit(experiment, None, feeds["train"], feeds["validation"], out / "work", verbose=0,
                  placement=placement)
    state = json.loads((out / "work" / "state.json").read_text())
    model = load_model(out / "work" / state["last"], compile=False)
    np.savez(out / "weights.npz", *[np.asarray(w) for w in model.weights])
    finish(out / "work", out / "model.keras")
    saved = load_model(out / "model.keras", compile=False)
    result["synchronized"] = any(getattr(layer, "synchronized", False) for layer in saved.get_layer("tiny").layers)
    result["history"] = history
    (out / "result.json").write_text(json.dumps(result))


def start_worker(kind: str, out: Path, train_images: int) -> subprocess.Popen:
    env = dict(os.environ)
    # XLA (JAX) reads this when it starts; TensorFlow's devices are set up by the worker itself.
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={DEVICES}".strip()
    env["PYTHONPATH"] = os.pathsep.join([str(paths.ROOT / "src"), str(paths.ROOT), env.get("PYTHONPATH", "")])
    env["KERAS_HOME"] = str(out / "keras_home")
    out.mkdir(parents=True)
    log = open(out / "log.txt", "w")  # noqa: SIM115 - the child writes it until it ends
    return subprocess.Popen([sys.executable, "-m", "tests.integration.test_distribution", kind, str(out),
                             str(train_images)], cwd=paths.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def result_of(process: subprocess.Popen, out: Path) -> dict:
    returncode = process.wait(timeout=300)
    assert returncode == 0, (out / "log.txt").read_text()[-6000:]
    result = json.loads((out / "result.json").read_text())
    with np.load(out / "weights.npz") as weights:
        result["weights"] = [weights[f"arr_{i}"] for i in range(len(weights.files))]
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """The three runs, side by side: one device on the 16 images of the full batches, two devices on
    all 18 (the partial batch dropped), and one device on all 18 (the partial batch trained: the control)."""
    root = tmp_path_factory.mktemp("distribution")
    plan = {"single": ("none", TRAIN - TRAIN % BATCH), "parallel": ("data_parallel", TRAIN),
            "partial": ("none", TRAIN)}
    started = {name: start_worker(kind, root / name, n) for name, (kind, n) in plan.items()}
    return {name: result_of(process, root / name) for name, process in started.items()}


@pytest.mark.slow  # the runs: three trainings in subprocesses, a minute or more on 2 cores
def test_two_devices_train_the_weights_of_one(runs):
    """Even when the two-device run is killed after an epoch and resumed from its saved model."""
    single, parallel = runs["single"], runs["parallel"]
    assert single["describe"]["devices"].count(":") == 1 and single["describe"]["batch_per_device"] == BATCH
    assert parallel["describe"] == {"distribution": "data_parallel", "devices": "cpu:0,cpu:1", "device_count": 2,
                                    "batch_per_device": BATCH // DEVICES}
    assert not parallel["synchronized"], "a published model loads on every backend"
    assert parallel["resumed"] == 1, "the parallel run was killed after its first epoch and resumed"

    assert len(single["weights"]) == len(parallel["weights"])
    for a, b in zip(single["weights"], parallel["weights"], strict=True):
        np.testing.assert_allclose(b, a, rtol=TOLERANCE, atol=TOLERANCE)
    assert max(float(np.max(np.abs(w))) for w in single["weights"]) > 0.01, "the runs trained"


@pytest.mark.slow
def test_validation_figures_are_those_of_one_device(runs):
    """Every validation image counts once, the last batch (3 of 7 images) split unevenly or padded."""
    single, parallel = runs["single"], runs["parallel"]
    for one, two in zip(single["history"], parallel["history"], strict=True):
        keys = sorted(k for k in one if k.startswith("val_"))
        assert keys == sorted(k for k in two if k.startswith("val_")) and {"val_loss", "val_accuracy"} <= set(keys)
        heads = [k for k in keys if k.endswith("_loss") and k != "val_loss"]
        assert heads, "the CAPTCHA heads' own losses are logged"
        if parallel["backend"] == "tensorflow":
            # Keras averages each output's own loss over replicas unweighted (distribution's docstring).
            keys = [k for k in keys if k not in heads]
        for key in keys:
            assert two[key] == pytest.approx(one[key], rel=TOLERANCE, abs=TOLERANCE), key


@pytest.mark.slow
def test_a_batch_the_devices_cannot_split_stops_the_stage_before_training(runs):
    assert runs["parallel"]["refusal"] == (
        "experiments.captcha.batch_size is 5, which distribution data_parallel cannot split over 2 devices "
        "(cpu:0, cpu:1); accepted: a multiple of 2 (e.g. 4, 6), or distribution none")


@pytest.mark.slow
def test_a_step_on_the_partial_batch_would_show(runs):
    """Control: training the partial batch too moves the weights far beyond the tolerance."""
    gap = max(float(np.max(np.abs(a - b))) for a, b in zip(runs["single"]["weights"], runs["partial"]["weights"],
                                                            strict=True))
    assert gap > 100 * TOLERANCE


class Listed:
    """A stand-in feed: batch ``i`` holds the given targets (a PyDataset's interface, no Keras needed)."""

    workers, use_multiprocessing, max_queue_size = 1, False, 10

    def __init__(self, *batches: list[int]):
        self.batches, self.epochs = batches, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        y = np.asarray(self.batches[index])
        return y.astype("float32")[:, None], {"head0": y, "head1": y * 10}

    def on_epoch_end(self) -> None:
        self.epochs += 1


def test_padded_batches_weigh_nothing_and_keep_the_feed_shape():
    padded = PaddedBatches(Listed([1, 2, 3, 4], [5, 6, 7]), 4)
    x, y, w = padded[1]
    assert x[:, 0].tolist() == [5, 6, 7, 5] and y["head1"].tolist() == [50, 60, 70, 50]
    assert w.tolist() == [1, 1, 1, 0]
    assert padded[0][2].tolist() == [1, 1, 1, 1], "every batch carries weights"
    padded.on_epoch_end()
    assert padded.feed.epochs == 1


def test_full_batches_leave_out_the_partial_last():
    feed = Listed([1, 2], [3, 4], [5])
    full = FullBatches(feed, 2)
    assert len(full) == 2 and full[1][0][:, 0].tolist() == [3, 4]
    with pytest.raises(IndexError):
        full[2]
    full.on_epoch_end()
    assert feed.epochs == 1


def test_placement_feeds_are_unchanged_on_one_device():
    feed, one = Listed([1, 2], [3]), Placement("none", ("cpu:0",))
    assert one.training(feed, 3, 2) is feed
    assert one.validation(feed, 3, 2) == (feed, [])
    two = Placement("data_parallel", ("cpu:0", "cpu:1"))
    assert two.training(feed, 4, 2) is feed, "no partial batch, nothing to drop"
    assert isinstance(two.training(feed, 3, 2), FullBatches)
    padded, callbacks = two.validation(feed, 3, 2)
    assert isinstance(padded, PaddedBatches) and [type(c) for c in callbacks] == [UnpaddedLoss]
    mirrored = Placement("data_parallel", ("cpu:0", "cpu:1"), strategy=object())
    assert mirrored.validation(feed, 3, 2) == (feed, []), "TensorFlow's strategy splits uneven batches itself"


def test_unpadded_loss_rescales_validation_losses_but_not_the_penalty():
    import types

    callback = UnpaddedLoss(images=7, padded=8)
    callback.set_model(types.SimpleNamespace(losses=[np.float32(0.5)]))
    logs = {"loss": 3.0, "val_loss": 0.5 + 2.0 * 7 / 8, "val_head0_loss": 1.0 * 7 / 8, "val_accuracy": 0.25}
    callback.on_epoch_end(0, logs)
    assert logs == {"loss": 3.0, "val_loss": pytest.approx(2.5), "val_head0_loss": pytest.approx(1.0),
                    "val_accuracy": 0.25}


def test_a_batch_the_devices_cannot_split_is_refused_in_one_line():
    placement = Placement("data_parallel", ("gpu:0", "gpu:1", "gpu:2"))
    placement.check_batch("experiments.pets.batch_size", 18)
    with pytest.raises(ConfigError) as err:
        placement.check_batch("experiments.pets.batch_size", 16)
    assert str(err.value) == ("experiments.pets.batch_size is 16, which distribution data_parallel cannot split over "
                              "3 devices (gpu:0, gpu:1, gpu:2); accepted: a multiple of 3 (e.g. 15, 18), or "
                              "distribution none")
    assert placement.describe(18)["batch_per_device"] == 6


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
