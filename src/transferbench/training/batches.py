"""Feeds memory-mapped uint8 arrays to ``model.fit`` in batches, on any backend.

A batch is a pure function of (seed, epoch, index): :meth:`ArrayBatches.batch`. Keras takes the
batches as a ``PyDataset`` on JAX and on a CPU; on TensorFlow with a GPU :func:`fit_input` turns the
same function into a ``tf.data`` pipeline (index -> parallel gather -> prefetch) in place of Keras'
``from_generator`` on one Python thread, so the same batches arrive in the same order whichever way
they are read.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Protocol

import keras
import numpy as np

from transferbench.core import backend


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
                 n_outputs: int = 1, shuffle: bool = False, seed: int = 0, epoch: int = 0, **kwargs):
        super().__init__(**kwargs)
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images, self.targets = images, targets
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

    def batch(self, epoch: int, index: int):
        """Batch ``index`` of ``epoch``: the same arrays whenever and on whichever thread it is asked for."""
        lo, hi = index * self.batch_size, min((index + 1) * self.batch_size, len(self.images))
        order = self.order(epoch)
        picked: slice | np.ndarray
        if order is None:
            picked = slice(lo, hi)
        else:
            # Sorted indices read the memory map front to back, which is much faster than random order.
            picked = np.sort(order[lo:hi])
        x = np.asarray(self.images[picked])
        y = np.asarray(self.targets[picked])
        if self.n_outputs > 1:
            return x, tuple(y[:, i] for i in range(self.n_outputs))
        return x, y

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
