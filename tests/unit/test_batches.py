"""The feeder: the same batches in the same order however they are read, and no per-step host sync."""

from __future__ import annotations

import ast
import inspect

import keras
import numpy as np
import pytest
from keras.src import utils as keras_utils

from tests.unit.test_strategies import make_experiment
from transferbench.data.task import Task
from transferbench.training import batches as batches_module
from transferbench.training.batches import ArrayBatches, fit_input, tf_dataset
from transferbench.training.feed import TargetsPerOutput
from transferbench.training.fit import fit

pytestmark = pytest.mark.jax  # on JAX the PyDataset is the feed; the tf.data tests skip there

TF = keras.backend.backend() == "tensorflow"
needs_tf = pytest.mark.skipif(not TF, reason="the tf.data pipeline is TensorFlow's input path only")


def feed(n: int = 10, batch: int = 4, n_outputs: int = 2, **kwargs) -> ArrayBatches:
    """``n`` distinct images (a partial last batch), targets that name their image, shuffled by seed 3."""
    images = np.arange(n * 2 * 2 * 3, dtype=np.int64).reshape(n, 2, 2, 3).astype(np.uint8)
    images[:, 0, 0, 0] = np.arange(n)  # each image says which it is
    targets = np.stack([np.arange(n) * 10 + k for k in range(n_outputs)], axis=1)
    return ArrayBatches(images, targets if n_outputs > 1 else targets[:, 0], batch, n_outputs=n_outputs,
                        shuffle=True, seed=3, **kwargs)


def as_numpy(batch):
    return [np.asarray(a) for a in keras.tree.flatten(batch)]


def pydataset_epochs(data: keras.utils.PyDataset, epochs: int, first: int = 0) -> list[list[np.ndarray]]:
    """What Keras' own PyDataset adapter yields (its iterator, its epoch-end hook), epoch by epoch."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    data.set_epoch(first) if hasattr(data, "set_epoch") else data.batches.set_epoch(first)
    adapter = PyDatasetAdapter(data, shuffle=False)
    out = []
    for _ in range(epochs):
        adapter.on_epoch_begin()
        out += [as_numpy(b) for b in adapter.get_numpy_iterator()]
        adapter.on_epoch_end()
    return out


def pipeline_epochs(dataset) -> list[list[np.ndarray]]:
    return [as_numpy(b) for b in dataset]


def assert_same(got: list[list[np.ndarray]], expected: list[list[np.ndarray]]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


def test_a_batch_depends_on_seed_epoch_and_index_only():
    a, b = feed(), feed(epoch=5)
    assert_same([as_numpy(a.batch(1, i)) for i in range(len(a))], [as_numpy(b.batch(1, i)) for i in range(len(b))])
    epoch0 = np.concatenate([a.batch(0, i)[0][:, 0, 0, 0] for i in range(len(a))])
    epoch1 = np.concatenate([a.batch(1, i)[0][:, 0, 0, 0] for i in range(len(a))])
    assert sorted(epoch0) == sorted(epoch1) == list(range(10)) and list(epoch0) != list(epoch1)


def test_pydataset_workers_change_nothing():
    """Keras' thread workers (the JAX input path) give the same batches in the same order as one."""
    assert_same(pydataset_epochs(feed(workers=3, max_queue_size=2), 3), pydataset_epochs(feed(), 3))


@needs_tf
@pytest.mark.parametrize("n_outputs", [1, 2])
def test_the_tf_pipeline_gives_the_pydatasets_batches_in_order(n_outputs):
    data = feed(n_outputs=n_outputs)
    x, steps = fit_input(data, initial_epoch=0, epochs=3)
    assert steps == len(data) == 3
    assert_same(pipeline_epochs(x), pydataset_epochs(feed(n_outputs=n_outputs), 3))


@needs_tf
def test_a_resumed_epoch_equals_the_uninterrupted_one():
    uninterrupted = pipeline_epochs(fit_input(feed(), initial_epoch=0, epochs=4)[0])
    resumed = pipeline_epochs(fit_input(feed(), initial_epoch=2, epochs=4)[0])
    assert_same(resumed, uninterrupted[2 * 3:])


@needs_tf
def test_the_tf_pipeline_gives_the_same_batches_whatever_its_thread_count():
    import tensorflow as tf

    def with_threads(count: int):
        options = tf.data.Options()
        options.threading.private_threadpool_size = count
        return pipeline_epochs(tf_dataset(feed(n=40, batch=3), 0, 3).with_options(options))

    assert_same(with_threads(1), with_threads(8))


@needs_tf
def test_validation_is_one_pass_at_the_feeds_epoch():
    data = ArrayBatches(np.arange(5, dtype=np.uint8).reshape(5, 1, 1, 1), np.arange(5), 2)
    x, steps = fit_input(data)
    assert steps is None
    assert [b[1].tolist() for b in x.as_numpy_iterator()] == [[0, 1], [2, 3], [4]]


@needs_tf
def test_targets_for_auxiliary_outputs_arrive_keyed_by_output():
    task = Task("binary", 2)
    names = ["label", "aux1", "aux2"]
    data = TargetsPerOutput(feed(n_outputs=1), task, names)
    x, _ = fit_input(data, initial_epoch=1, epochs=2)
    got = list(x.as_numpy_iterator())
    assert all(sorted(y) == sorted(names) for _, y in got)
    assert_same([as_numpy(b) for b in got], [as_numpy(data.batch(1, i)) for i in range(len(data))])


def test_batches_module_imports_no_tensorflow_at_module_level():
    """It must import on JAX without TensorFlow: TensorFlow is imported inside the TF-only function."""
    tree = ast.parse(inspect.getsource(batches_module))
    top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = [alias.name for node in top if isinstance(node, ast.Import) for alias in node.names]
    names += [node.module or "" for node in top if isinstance(node, ast.ImportFrom)]
    assert not [n for n in names if n.split(".")[0] == "tensorflow"]


def test_other_backends_get_the_pydataset_itself(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    data = feed()
    assert fit_input(data, initial_epoch=1, epochs=3) == (data, None)
    assert fit_input(data) == (data, None)


# ---- no per-step host sync ---------------------------------------------------------------

def blocks_async_batch_callbacks(callback: keras.callbacks.Callback) -> bool:
    """Keras' own rule (CallbackList._configure_async_dispatch): a callback that overrides a batch-end
    hook, unless it declares ``async_safe``, makes every step wait for its results on the host."""
    if getattr(callback, "async_safe", False):
        return False
    return not (keras_utils.is_default(callback.on_batch_end) and keras_utils.is_default(callback.on_train_batch_end))


def test_the_rule_catches_a_per_batch_checkpoint():
    assert blocks_async_batch_callbacks(keras.callbacks.ModelCheckpoint("x.keras"))
    assert not blocks_async_batch_callbacks(keras.callbacks.ReduceLROnPlateau())


def test_no_callback_of_our_fit_turns_off_async_batch_callbacks(params, tmp_path, monkeypatch):
    from transferbench.training.train import EpochSeconds

    seen: list[keras.callbacks.Callback] = []
    original = keras.callbacks.CallbackList.__init__

    def recording(self, callbacks=None, *args, **kwargs):
        seen.extend(keras.tree.flatten(callbacks) if callbacks else [])
        original(self, callbacks, *args, **kwargs)

    monkeypatch.setattr(keras.callbacks.CallbackList, "__init__", recording)
    schedule = {"kind": "plateau", "factor": 0.5, "patience": 1, "min_lr": 1e-6, "monitor": "val_loss"}
    experiment = make_experiment(params, epochs=2, schedule=schedule)
    rng = np.random.default_rng(0)
    images, targets = rng.integers(0, 256, (8, *experiment.image_shape), dtype=np.uint8), rng.integers(0, 2, 8)
    fit(experiment, None, ArrayBatches(images, targets, 4, shuffle=True), ArrayBatches(images, targets, 4),
        tmp_path / "work", extra_callbacks=[EpochSeconds(8)], verbose=0)
    kinds = {type(c).__name__ for c in seen}
    assert {"EpochSummary", "ReduceLROnPlateau", "EpochSeconds", "ResumeState"} <= kinds
    assert [type(c).__name__ for c in seen if blocks_async_batch_callbacks(c)] == []


def test_no_callback_class_of_the_project_overrides_a_batch_end_hook():
    import transferbench.training.train  # noqa: F401  # the train stage's callbacks, with fit's

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    ours = [c for c in subclasses(keras.callbacks.Callback) if c.__module__.startswith("transferbench.")]
    assert {"EpochSummary", "ResumeState", "EpochSeconds", "MlflowEpochMetrics"} <= {c.__name__ for c in ours}
    overriding = [c.__name__ for c in ours
                  if not getattr(c, "async_safe", False)
                  and (c.on_batch_end is not keras.callbacks.Callback.on_batch_end
                       or c.on_train_batch_end is not keras.callbacks.Callback.on_train_batch_end)]
    assert overriding == []


@pytest.mark.parametrize("gpu", [False, True])
def test_fit_feeds_the_pipeline_only_with_a_gpu_on_tensorflow(params, tmp_path, monkeypatch, gpu):
    """On a CPU the model is the bottleneck and the pipeline's threads would compete with it."""
    from transferbench.core import backend

    fed = []
    original = keras.Model.fit

    def recording(self, x=None, *args, **kwargs):
        fed.append((type(x).__name__, type(kwargs.get("validation_data")).__name__))
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording)
    monkeypatch.setattr(backend, "gpu_available", lambda: gpu)
    experiment = make_experiment(params, epochs=1)
    rng = np.random.default_rng(0)
    images, targets = rng.integers(0, 256, (8, *experiment.image_shape), dtype=np.uint8), rng.integers(0, 2, 8)
    fit(experiment, None, ArrayBatches(images, targets, 4, shuffle=True), ArrayBatches(images, targets, 4),
        tmp_path / "work", verbose=0)
    pipeline = gpu and TF
    assert len(fed) == 1
    assert all(("Dataset" in name) == pipeline for name in fed[0]), fed
    assert all((name == "ArrayBatches") == (not pipeline) for name in fed[0]), fed



# ---- images held on the GPU (JAX) --------------------------------------------------------

JAX = keras.backend.backend() == "jax"
needs_jax = pytest.mark.skipif(not JAX, reason="the images are held on the device on JAX only")


def test_weighted_batches_carry_the_sample_weights_keras_gives_their_classes():
    from keras.src.trainers.data_adapters.data_adapter_utils import class_weight_to_sample_weights

    targets = np.array([0, 2, 1, 2, 2, 0, 1, 2, 0])
    class_weight = {0: 1.5, 2: 0.25}  # class 1 not named: weight 1, as in Keras
    plain = ArrayBatches(np.zeros((9, 1, 1, 1), np.uint8), targets, 4, shuffle=True, seed=5, epoch=2)
    weighted = plain.weighted(class_weight)
    assert plain.weighted(None) is plain
    assert weighted.epoch == 2 and len(weighted) == len(plain) == 3
    for epoch in range(2):
        for index in range(3):
            x, y = plain.batch(epoch, index)
            wx, wy, w = weighted.batch(epoch, index)
            np.testing.assert_array_equal(wx, x)
            np.testing.assert_array_equal(wy, y)
            expected = class_weight_to_sample_weights(y, class_weight)
            assert w.dtype == expected.dtype
            np.testing.assert_array_equal(w, expected)
    with pytest.raises(ValueError, match="class weights need one output; these batches have 2"):
        feed(n_outputs=2).weighted({0: 1.0})


def test_weighing_classes_in_the_feed_trains_the_model_keras_class_weight_trains():
    """The weights ride in the batches in place of ``fit(class_weight=...)``: the same model, to the bit."""
    rng = np.random.default_rng(0)
    images, targets = rng.integers(0, 256, (30, 3, 3, 1), dtype=np.uint8), rng.integers(0, 3, 30)
    class_weight = {0: 2.0, 1: 0.5, 2: 1.25}

    def trained(data, **fit_kwargs):
        keras.utils.set_random_seed(4)
        model = keras.Sequential([keras.Input((3, 3, 1)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                                  keras.layers.Dense(3, activation="softmax")])
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
        model.fit(data, epochs=2, shuffle=False, verbose=0, **fit_kwargs)
        return [np.asarray(w) for w in model.weights]

    by_keras = trained(ArrayBatches(images, targets, 8, shuffle=True, seed=1), class_weight=class_weight)
    by_feed = trained(ArrayBatches(images, targets, 8, shuffle=True, seed=1).weighted(class_weight))
    unweighted = trained(ArrayBatches(images, targets, 8, shuffle=True, seed=1))
    for a, b in zip(by_keras, by_feed, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(by_keras[0], unweighted[0])  # the weights did change what was learned


@pytest.mark.parametrize("shuffle", [True, False])
def test_rows_pick_the_full_batches_images_as_picked_does(shuffle):
    data = ArrayBatches(np.zeros((23, 1, 1, 1), np.uint8), np.zeros(23), 4, shuffle=shuffle, seed=2)
    for epoch in range(2):
        rows = data.rows(epoch, 1, 4)
        assert rows.shape == (4, 4)
        for k, row in enumerate(rows):
            np.testing.assert_array_equal(row, np.arange(23)[data.picked(epoch, 1 + k)])
    with pytest.raises(ValueError, match="batches 4 to 6 of 23 images by 4: only full batches, 0 to 5"):
        data.rows(0, 4, 2)  # batch 5 is the short one


@needs_jax
@pytest.mark.parametrize("group", [1, 2, 4, None])
@pytest.mark.parametrize("n_outputs", [1, 2, "weighted"])
def test_device_batches_are_the_array_batches_in_the_same_order(n_outputs, group):
    import jax

    from transferbench.training.batches import DeviceBatches

    def source() -> ArrayBatches:  # 23 images: a partial last batch
        return feed(n=23, batch=4, n_outputs=1).weighted({10: 0.5}) if n_outputs == "weighted" else feed(n=23, batch=4,
                                                                                           n_outputs=n_outputs)

    host = source()
    image_bytes = host.images[0].nbytes
    device = DeviceBatches(source(), chunk_bytes=5 * image_bytes, group=group)  # 5 chunks
    # At most ``group`` a call (64 by default), in as few calls as that allows, as even as can be: the 5
    # full batches of an epoch in 5 calls of 1, 3 of 2 (the last padded), 2 of 3 rather than 4 and 1, 1 of 5.
    assert device.group == {1: 1, 2: 2, 4: 3, None: 5}[group]
    for epoch in range(3):
        assert_same([as_numpy(device.batch(epoch, i)) for i in range(len(device))],
                    [as_numpy(host.batch(epoch, i)) for i in range(len(host))])
    # Asked for out of order, across epochs and groups: still each (epoch, index)'s own batch.
    asked = [(1, 4), (0, 0), (1, 3), (1, 5), (2, 1), (0, 4), (2, 0)]
    assert_same([as_numpy(device.batch(e, i)) for e, i in asked], [as_numpy(host.batch(e, i)) for e, i in asked])
    # Nothing of a batch is left on the host for Keras to send: every array of it is on the device.
    assert all(isinstance(a, jax.Array) for a in keras.tree.flatten(device.batch(0, 0)))
    assert_same(pydataset_epochs(device, 3, first=1), pydataset_epochs(source(), 3, first=1))


@needs_jax
def test_a_gathered_group_stays_within_its_bytes(monkeypatch):
    from transferbench.training.batches import DeviceBatches

    source = feed(n=40, batch=2)  # 12 bytes an image, 24 a batch, 20 full batches
    assert DeviceBatches(source).group == 20
    assert DeviceBatches(source, group=3).group == 3
    monkeypatch.setattr(batches_module, "GROUP_BYTES", 24 * 7 + 23)  # room for 7: 20 in 3 calls of 7
    assert DeviceBatches(source).group == 7
    monkeypatch.setattr(batches_module, "GROUP_BYTES", 24 * 8)  # room for 8: still 3 calls, so 7 each
    assert DeviceBatches(source).group == 7
    monkeypatch.setattr(batches_module, "GROUP_BYTES", 1)  # a batch larger than the bound: one at a time
    device = DeviceBatches(source)
    assert device.group == 1
    assert_same([as_numpy(device.batch(1, i)) for i in range(len(device))],
                [as_numpy(source.batch(1, i)) for i in range(len(source))])


@needs_jax
def test_device_batches_share_the_sources_epoch_and_serve_auxiliary_outputs():
    from transferbench.training.batches import DeviceBatches

    source = feed(n_outputs=1)
    device = DeviceBatches(source)
    device.set_epoch(4)
    assert source.epoch == 4
    device.on_epoch_end()
    assert source.epoch == device.epoch == 5
    names = ["label", "aux1"]
    aux = TargetsPerOutput(device, Task("binary", 2), names)
    x, y = aux[1]
    assert sorted(y) == sorted(names)
    np.testing.assert_array_equal(np.asarray(x), source.batch(5, 1)[0])
    np.testing.assert_array_equal(y["aux1"], source.batch(5, 1)[1])
    x, y, w = TargetsPerOutput(DeviceBatches(source.weighted({3: 2.0})), Task("binary", 2), names)[1]
    np.testing.assert_array_equal(w, source.weighted({3: 2.0}).batch(5, 1)[2])


@needs_jax
def test_the_images_go_to_the_gpu_only_with_one_jax_gpu_and_room_for_them(monkeypatch, caplog):
    from transferbench.core import backend
    from transferbench.training.batches import RESIDENT_SHARE, DeviceBatches, device_resident

    data = feed(n=40)
    size = data.images.nbytes
    monkeypatch.setattr(backend, "gpu_available", lambda: False)
    assert device_resident(data) is data  # no GPU: the CPU reads the memory map itself
    monkeypatch.setattr(backend, "gpu_available", lambda: True)
    monkeypatch.setattr(batches_module, "device_memory", lambda device: int(size / RESIDENT_SHARE) + 1)
    with caplog.at_level("INFO"):
        assert isinstance(device_resident(data), DeviceBatches)
    assert "; 10 batches gathered a call" in caplog.text  # 40 images by 4: every batch of an epoch at once
    caplog.clear()
    assert device_resident(data, devices=2) is data  # data parallel splits each batch over the devices
    with caplog.at_level("INFO"):
        monkeypatch.setattr(batches_module, "device_memory", lambda device: int(size / RESIDENT_SHARE) - 1)
        assert device_resident(data) is data
    assert "read from the host" in caplog.text
    assert "more than 33% of" in caplog.text
    assert batches_module.feed_kind(size) == "host"
    monkeypatch.setattr(batches_module, "device_memory", lambda device: 10 * size)
    assert (batches_module.feed_kind(size), batches_module.feed_kind(size, devices=2)) == ("device", "host")
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    assert device_resident(data) is data  # TensorFlow has its own pipeline (fit_input)
    assert batches_module.feed_kind(size) == "host"


@needs_jax
def test_training_from_device_held_images_gives_the_same_model(params, tmp_path, monkeypatch):
    """The same batches in the same order: the weights after two epochs equal the host feed's."""
    from transferbench.core import backend
    from transferbench.models.backbones import load_model

    experiment = make_experiment(params, epochs=2)
    rng = np.random.default_rng(1)
    images, targets = rng.integers(0, 256, (12, *experiment.image_shape), dtype=np.uint8), rng.integers(0, 2, 12)
    fed: list[str] = []
    original = batches_module.DeviceBatches.batch

    def recording(self, epoch, index):
        fed.append("device")
        return original(self, epoch, index)

    monkeypatch.setattr(batches_module.DeviceBatches, "batch", recording)

    def trained(on_device: bool):
        monkeypatch.setattr(backend, "gpu_available", lambda: on_device)
        monkeypatch.setattr(batches_module, "device_memory", lambda device: 2**40)
        work = tmp_path / f"work-{on_device}"
        fit(experiment, None, ArrayBatches(images, targets, 5, shuffle=True, seed=3), ArrayBatches(images, targets, 5),
            work, verbose=0)
        return [np.asarray(w) for w in load_model(work / "epoch-0002.keras").weights]

    host = trained(False)
    assert fed == []
    device = trained(True)
    assert len(fed) >= 2 * 3  # every training batch of both epochs came from the device copy
    for a, b in zip(host, device, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
