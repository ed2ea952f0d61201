"""Feeds memory-mapped uint8 arrays to ``model.fit`` in batches, on any backend.

A batch is a pure function of (seed, epoch, index): :meth:`ArrayBatches.batch`. Keras takes the
batches as a ``PyDataset`` on a CPU. With a GPU, the same function is read two faster ways, so the same
batches arrive in the same order whichever way they are read:

- on TensorFlow, :func:`fit_input` turns it into a ``tf.data`` pipeline (index -> parallel gather ->
  prefetch) in place of Keras' ``from_generator`` on one Python thread;
- on JAX, :func:`device_resident` copies the images, targets and any class weights to the GPU once and
  :class:`DeviceBatches` gathers the batches there, many in one call: only their indices cross from the
  host, where the host feed's one Python thread copying whole images cannot keep a GPU busy
  (docs/benchmarks.md, "Feeder").
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Protocol

import keras
import numpy as np

from transferbench.core import backend

log = logging.getLogger(__name__)

# The share of a GPU's memory the training images may take to be held there; the rest is the model's,
# its activations' and its optimizer's. A third keeps the reference studies' largest splits (7.7 GB of CAPTCHAs,
# 7.4 GB of pets) on a 40 GB GPU and leaves GoogLeNet's batch of 256 at 224x224 its room.
RESIDENT_SHARE = 1 / 3
UPLOAD_CHUNK_BYTES = 256 * 2**20  # read from the memory map and sent to the GPU this much at a time
# DeviceBatches gathers this many batches in one call (fewer where they would pass GROUP_BYTES): each call
# costs the host a dispatch, a transfer of the indices and a wait for the device, whatever it gathers,
# and that, not the gather, sets the device feed's pace (docs/benchmarks.md, "Feeder"). The group held
# on the device at once stays within GROUP_BYTES.
MAX_GROUP = 64
GROUP_BYTES = 64 * 2**20


class EpochBatches(Protocol):
    """What :func:`fit_input` reads: a count of batches per epoch and each batch from (epoch, index)."""

    def __len__(self) -> int: ...

    def batch(self, epoch: int, index: int) -> Any: ...


class ArrayBatches(keras.utils.PyDataset):
    """Batches of (images, targets) from arrays; shuffled per epoch from (seed, epoch) when asked.

    The order depends only on the seed and the epoch number, so a resumed run sees the same batches
    as one that was never interrupted. Images stay uint8 until the model's own preprocessing.
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, batch_size: int, *,
                 n_outputs: int = 1, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                 sample_weights: np.ndarray | None = None, **kwargs):
        super().__init__(**kwargs)
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        if sample_weights is not None and len(sample_weights) != len(images):
            raise ValueError(f"{len(images)} images but {len(sample_weights)} sample weights")
        self.images, self.targets, self.sample_weights = images, targets, sample_weights
        self.batch_size, self.n_outputs = batch_size, n_outputs
        self.shuffle, self.seed = shuffle, seed
        # One permutation per epoch, shared by the threads that gather batches (tf.data's map).
        self._orders: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> np.ndarray | None:
        """A permutation of the images for ``epoch`` when shuffling, else None (their own order)."""
        if not self.shuffle:
            return None
        with self._lock:
            if epoch not in self._orders:
                if len(self._orders) >= 2:  # the epoch ending and the one starting
                    self._orders.pop(min(self._orders))
                self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
            return self._orders[epoch]

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def weighted(self, class_weight: dict[int, float] | None) -> ArrayBatches:
        """These batches, each image weighed by its class as Keras' ``class_weight`` weighs it (a class not
        named: 1): (images, targets, weights). Looked up once here rather than for every batch in Keras'
        adapter, so the weights can travel with the targets (on the GPU with ``DeviceBatches``). None: these."""
        if class_weight is None:
            return self
        if self.n_outputs != 1:
            raise ValueError(f"class weights need one output; these batches have {self.n_outputs}")
        classes, inverse = np.unique(np.asarray(self.targets).reshape(len(self.targets)), return_inverse=True)
        per_class = np.array([class_weight.get(int(c), 1.0) for c in classes], dtype=keras.backend.floatx())
        return ArrayBatches(self.images, self.targets, self.batch_size, n_outputs=self.n_outputs,
                            shuffle=self.shuffle, seed=self.seed, epoch=self.epoch, sample_weights=per_class[inverse],
                            workers=self.workers, use_multiprocessing=self.use_multiprocessing,
                            max_queue_size=self.max_queue_size)

    def picked(self, epoch: int, index: int) -> slice | np.ndarray:
        """Which images batch ``index`` of ``epoch`` holds: a slice, or their indices in ascending order."""
        lo, hi = index * self.batch_size, min((index + 1) * self.batch_size, len(self.images))
        order = self.order(epoch)
        if order is None:
            return slice(lo, hi)
        # Sorted indices read the memory map front to back, which is much faster than random order.
        return np.sort(order[lo:hi])

    def rows(self, epoch: int, first: int, count: int) -> np.ndarray:
        """Which images the full batches ``first`` to ``first + count`` of ``epoch`` hold, a row each, in
        ascending order: what :meth:`picked` picks for each, all at once."""
        lo, hi = first * self.batch_size, (first + count) * self.batch_size
        if first < 0 or count < 1 or hi > len(self.images):
            raise ValueError(f"batches {first} to {first + count} of {len(self.images)} images by "
                             f"{self.batch_size}: only full batches, 0 to {len(self.images) // self.batch_size}")
        order = self.order(epoch)
        chosen = np.arange(lo, hi) if order is None else order[lo:hi]
        return np.sort(chosen.reshape(count, self.batch_size), axis=1)

    def batch(self, epoch: int, index: int):
        """Batch ``index`` of ``epoch``: the same arrays whenever and on whichever thread it is asked for;
        (images, targets), and their sample weights third where the batches are :meth:`weighted`."""
        picked = self.picked(epoch, index)
        pair = np.asarray(self.images[picked]), self.targets_of(picked)
        return pair if self.sample_weights is None else (*pair, self.sample_weights[picked])

    def targets_of(self, picked: slice | np.ndarray):
        """The targets of the ``picked`` images: one array, or one per output."""
        y = np.asarray(self.targets[picked])
        if self.n_outputs > 1:
            return tuple(y[:, i] for i in range(self.n_outputs))
        return y

    def __getitem__(self, index: int):
        return self.batch(self.epoch, index)

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)


def fit_input(feed: keras.utils.PyDataset, *, initial_epoch: int = 0, epochs: int | None = None,
              pipeline: bool = True) -> tuple[Any, int | None]:
    """``(x, steps_per_epoch)`` for ``model.fit`` / ``validation_data``: the epochs from ``initial_epoch``
    to ``epochs`` of ``feed`` (None: one pass at the feed's current epoch, for validation).

    On TensorFlow with ``pipeline``, a ``tf.data`` pipeline that gathers batches on several threads:
    numpy copies release the GIL, and the train step waits on none of it. With ``epochs`` it spans
    every epoch at once, each batch (epoch, index) as the ``PyDataset`` would give it, and
    ``steps_per_epoch`` keeps Keras on that one iterator. Otherwise (JAX, other backends, or no
    ``pipeline``) the ``PyDataset`` itself.
    """
    if keras.backend.backend() != "tensorflow" or not pipeline or not hasattr(feed, "batch"):
        return feed, None  # (a feed without batch(epoch, index): data parallel's full or padded batches)
    epoch = getattr(feed, "epoch", 0)
    first, last = (epoch, epoch + 1) if epochs is None else (initial_epoch, epochs)
    return tf_dataset(feed, first, last), None if epochs is None else len(feed)


def tf_dataset(feed: EpochBatches, first: int, last: int):
    """Batches (epoch, index) for epochs ``first`` to ``last`` (exclusive), in order, gathered in parallel."""
    tf = backend.tensorflow()  # only on the TensorFlow backend: the module must import without it

    n = len(feed)
    sample = feed.batch(first, 0)
    flat = tf.nest.flatten(sample)
    dtypes = [tf.as_dtype(a.dtype) for a in flat]
    shapes = [(None, *a.shape[1:]) for a in flat]  # the last batch of an epoch may be short

    def gather(epoch: np.int64, index: np.int64) -> list[np.ndarray]:
        return tf.nest.flatten(feed.batch(int(epoch), int(index)))

    @tf.autograph.experimental.do_not_convert  # plain Python over a fixed list: nothing for autograph
    def load(step):  # a scalar int64 tensor: the step counted over all the epochs
        arrays = tf.numpy_function(gather, [step // n, step % n], dtypes, stateful=False)
        for array, shape in zip(arrays, shapes, strict=True):
            array.set_shape(shape)
        return tf.nest.pack_sequence_as(sample, arrays)

    steps = tf.data.Dataset.range(first * n, last * n)
    return steps.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def class_weights(name: str, targets: np.ndarray, n_classes: int) -> dict[int, float] | None:
    """Keras' ``class_weight`` for an experiment's ``class_weight`` setting (none: None); balanced weighs each
    class n / (n_classes x its count), sklearn's formula, so every class adds the same to the loss."""
    if name == "none":
        return None
    counts = np.bincount(np.asarray(targets).reshape(-1).astype(int), minlength=n_classes)
    return {c: float(len(targets) / (n_classes * count)) for c, count in enumerate(counts) if count}


class DeviceBatches(keras.utils.PyDataset):
    """An ``ArrayBatches``' batches gathered on JAX's default device from a copy of all its arrays held there.

    The host picks each batch's images as ``ArrayBatches`` does (:meth:`ArrayBatches.rows`, from
    (seed, epoch, index)); one compiled call on the device gathers the images, targets and any sample
    weights of ``group`` batches from the copy, and hands them out one by one. A call moves only
    indices to the device: host arrays in a batch would each cost Keras a transfer per step, and a call
    costs the host about the same whether it gathers one batch or many; that per-call work, not the
    gather, limits how fast the feed goes (docs/benchmarks.md, "Feeder"). The short last batch of an
    epoch is gathered alone. Epochs are the source's: setting or ending one here sets or ends it there.
    """

    def __init__(self, source: ArrayBatches, chunk_bytes: int = UPLOAD_CHUNK_BYTES, group: int | None = None):
        super().__init__()
        import jax
        import jax.numpy as jnp

        self.source = source
        self.device = jax.devices()[0]
        self.images = upload(source.images, self.device, chunk_bytes)
        with jax.default_device(self.device):  # placed, not committed: as upload() says
            self.targets = jnp.asarray(source.targets)
            self.weights = None if source.sample_weights is None else jnp.asarray(source.sample_weights)
        batch_bytes = max(1, source.batch_size * math.prod(source.images.shape[1:]) * source.images.dtype.itemsize)
        self.full = len(source.images) // source.batch_size  # full batches an epoch; the groups are of these
        # As many calls an epoch as the bound needs, the groups as even as can be: an epoch's last group
        # is padded to the others' size (one compiled shape), and even groups pad the least.
        calls = math.ceil(self.full / max(1, min(group or MAX_GROUP, GROUP_BYTES // batch_bytes)))
        self.group = max(1, math.ceil(self.full / max(1, calls)))
        self._held: tuple[tuple[int, int], tuple] | None = None  # ((epoch, first batch), the group's batches)
        n_outputs = source.n_outputs

        def take(images, targets, weights, indices):
            y = targets[indices]
            pair = images[indices], tuple(y[:, k] for k in range(n_outputs)) if n_outputs > 1 else y
            return pair if weights is None else (*pair, weights[indices])

        def take_rows(images, targets, weights, rows):  # rows: (batches, batch size); a batch per row
            return tuple(take(images, targets, weights, rows[k]) for k in range(rows.shape[0]))

        self._take = jax.jit(take_rows)

    @property
    def epoch(self) -> int:
        return self.source.epoch

    def set_epoch(self, epoch: int) -> None:
        self.source.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def batch(self, epoch: int, index: int):
        """Batch ``index`` of ``epoch``: the source's batch, its arrays on the device."""
        if index >= self.full:  # the short last batch: a shape of its own
            picked = self.source.picked(epoch, index)
            indices = np.arange(picked.start, picked.stop) if isinstance(picked, slice) else picked
            return self._take(self.images, self.targets, self.weights, indices[None].astype(np.int32))[0]
        first = index - index % self.group
        held = self._held
        if held is None or held[0] != (epoch, first):
            count = min(self.group, self.full - first)
            rows = self.source.rows(epoch, first, count)
            # An epoch's last group may be short: padded with its first row, so every call has one shape
            # and compiles once; the padding's batches are dropped.
            rows = np.concatenate([rows, np.repeat(rows[:1], self.group - count, axis=0)])
            held = (epoch, first), self._take(self.images, self.targets, self.weights, rows.astype(np.int32))
            self._held = held
        return held[1][index - first]

    def __getitem__(self, index: int):
        return self.batch(self.epoch, index)

    def on_epoch_end(self) -> None:
        self._held = None  # the device memory of the epoch's last group
        self.source.on_epoch_end()


def upload(images: np.ndarray, device: Any, chunk_bytes: int = UPLOAD_CHUNK_BYTES):
    """``images`` (a memory map, say) as one array on ``device``, sent a chunk at a time: the host never holds
    a second whole copy, and the device writes each chunk in place (the buffer is donated)."""
    import jax
    import jax.numpy as jnp

    per_image = max(1, int(np.prod(images.shape[1:])) * images.dtype.itemsize)
    step = max(1, chunk_bytes // per_image)
    write = jax.jit(lambda buffer, chunk, start: jax.lax.dynamic_update_slice_in_dim(buffer, chunk, start, 0),
                    donate_argnums=0)
    # Placed by default_device, not committed to it: Keras puts the host feed's batches on the device the
    # same way, and a committed input would make the train step compile again for the new placement.
    with jax.default_device(device):
        buffer = jnp.zeros(images.shape, images.dtype)
        for lo in range(0, len(images), step):
            buffer = write(buffer, jax.device_put(np.ascontiguousarray(images[lo:lo + step])), np.int32(lo))
    return buffer


def device_memory(device: Any) -> int | None:
    """Bytes a JAX device lets arrays take (``bytes_limit``), or None where it does not say (a CPU)."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def why_not_on_device(image_bytes: int, devices: int = 1) -> str | None:
    """None when training holds ``image_bytes`` of images on the GPU (:func:`device_resident`), else why not:
    it does on JAX with a GPU, one device (data parallel splits each batch over several: ``devices``), and
    the images within ``RESIDENT_SHARE`` of its memory."""
    if keras.backend.backend() != "jax":
        return f"{keras.backend.backend()} reads the host's arrays itself"
    if devices != 1:
        return f"data parallel over {devices} devices"
    if not backend.gpu_available():
        return "no GPU"
    import jax

    device = jax.devices()[0]
    limit = device_memory(device)
    if limit is None or image_bytes > RESIDENT_SHARE * limit:
        room = "unknown memory" if limit is None else f"{limit / 1e9:.1f} GB"
        return f"{image_bytes / 1e9:.2f} GB of images, more than {100 * RESIDENT_SHARE:.0f}% of {device}'s {room}"
    return None


def feed_kind(image_bytes: int, devices: int = 1) -> str:
    """``device`` where training gathers batches from images held on the GPU, else ``host`` (tags, log)."""
    return "host" if why_not_on_device(image_bytes, devices) else "device"


def device_resident(batches: ArrayBatches, devices: int = 1) -> keras.utils.PyDataset:
    """``batches`` as training should read them: :class:`DeviceBatches` where :func:`why_not_on_device` finds
    no reason against, else ``batches`` themselves. A GPU that could not hold them is said in the log."""
    size = batches.images.nbytes
    reason = why_not_on_device(size, devices)
    if reason is not None:
        if backend.gpu_available():
            log.info("training images read from the host: %s", reason)
        return batches
    import jax

    device = jax.devices()[0]
    start = time.perf_counter()
    resident = DeviceBatches(batches)
    log.info("training images held on %s: %.2f GB of its %.1f GB, copied in %.1f s; %d batches gathered a call",
             device, size / 1e9, (device_memory(device) or 0) / 1e9, time.perf_counter() - start, resident.group)
    return resident
