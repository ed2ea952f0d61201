"""Where a run trains: the backend's default device, or every visible device in data parallel.

``none`` trains on the backend's default device (the first GPU if any, else the CPU), as Keras does
unasked. ``data_parallel`` keeps one copy of the model per device (every visible GPU or TPU, else
every device of the backend) and gives each an equal share of every batch: on JAX through
``keras.distribution.DataParallel``, which must be set before the model is built (Keras lays out
each variable as it is created, and splits each batch as it arrives); on TensorFlow through
``tf.distribute.MirroredStrategy``, whose scope must cover building, compiling and loading the
model. TensorFlow is imported on the TensorFlow branch only: a JAX install has none.

The params batch size stays the global batch, so a reference study's recipe takes the same steps of the same
size on any number of devices: it must divide by the device count (:meth:`Placement.check_batch`).
What keeps a run on several devices equal to one on a single device:

- BatchNorm: JAX computes the statistics of the global batch already; TensorFlow's replicas would
  each use their own share's, so its BatchNorm layers are synchronised across replicas
  (:meth:`Placement.prepare`) and put back to Keras' default before a model is published
  (:func:`portable`: a synchronised layer cannot be loaded on another backend).
- The last batch of an epoch is partial, and a batch the devices cannot split evenly cannot be
  sharded (JAX refuses it; TensorFlow would average unequal shares as equals). Training drops it
  (:class:`FullBatches`): every step averages a full batch, as the reference studies' recipes did, and an epoch
  loses fewer images than one batch, different ones each epoch when the batches are shuffled.
  Validation must see every image. TensorFlow splits an uneven batch in unequal shares itself; JAX
  cannot, so there the batch is padded with copies that weigh nothing (:class:`PaddedBatches`):
  accuracies then count real images only, and :class:`UnpaddedLoss` turns the losses, which Keras
  averages over every row of a batch, back into means over the real images. Either way the
  validation loss and accuracies are those of one device. One figure is not, on TensorFlow:
  Keras averages each output's own loss (``val_<output>_loss``, CAPTCHA heads, auxiliary
  classifiers) over replicas and batches without weighing them by size; nothing reads it to decide
  (checkpoints follow ``val_accuracy``, schedules ``val_accuracy`` or ``val_loss``).

The test split is scored by the evaluate stage on one device, so its figures need none of this.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from transferbench.core import backend as backend_check
from transferbench.core.errors import ConfigError, UserError

NONE, DATA_PARALLEL = "none", "data_parallel"
KINDS = (NONE, DATA_PARALLEL)


@dataclass(frozen=True)
class Placement:
    """The devices a run trains on (Keras' names, ``cpu:0``) and, on TensorFlow in data parallel, its strategy."""

    kind: str
    devices: tuple[str, ...]
    strategy: Any = field(default=None, compare=False)  # tf.distribute.MirroredStrategy, or None

    @property
    def parallel(self) -> bool:
        return self.kind == DATA_PARALLEL

    @property
    def count(self) -> int:
        return len(self.devices)

    def scope(self) -> contextlib.AbstractContextManager:
        """Where models are built, compiled and loaded (TensorFlow's strategy scope; nothing otherwise)."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def check_batch(self, where: str, batch_size: int) -> None:
        """ConfigError unless ``batch_size`` (the global batch at ``where``) splits evenly over the devices."""
        if batch_size % self.count:
            divisible = ", ".join(str(b) for b in _multiples_near(batch_size, self.count))
            raise ConfigError(f"{where} is {batch_size}, which distribution {self.kind} cannot split over "
                              f"{self.count} devices ({', '.join(self.devices)}); accepted: a multiple of "
                              f"{self.count} (e.g. {divisible}), or distribution none")

    def describe(self, batch_size: int) -> dict[str, Any]:
        """What the stage logs and tags: the devices, their count and each one's share of the batch."""
        return {"distribution": self.kind, "devices": ",".join(self.devices), "device_count": self.count,
                "batch_per_device": batch_size // self.count if self.parallel else batch_size}

    def prepare(self, model: keras.Model) -> keras.Model:
        """``model`` as this placement trains it: on TensorFlow in data parallel, BatchNorm over the whole batch."""
        if self.strategy is not None:
            for layer in _batch_norms(model):
                # Read at call time (ops.moments(synchronized=...)): an all-reduce of each layer's sums.
                layer.synchronized = True
        return model

    def training(self, feed: keras.utils.PyDataset, images: int, batch_size: int) -> keras.utils.PyDataset:
        """The training feed: as it is on one device, its full batches only in data parallel."""
        if not self.parallel or images % batch_size == 0:
            return feed
        if images < batch_size:
            raise UserError(f"{images} training images make no full batch of {batch_size}, and distribution "
                            f"{self.kind} trains on full batches only; accepted: a batch size of at most "
                            f"{images} that divides by {self.count}, or distribution none")
        return FullBatches(feed, images // batch_size)

    def validation(self, feed: keras.utils.PyDataset, images: int,
                   batch_size: int) -> tuple[keras.utils.PyDataset, list[keras.callbacks.Callback]]:
        """The validation feed, and the callbacks (first among a fit's) that keep its figures exact."""
        padded = sum(_round_up(n, self.count) for n in _batch_sizes(images, batch_size))
        if not self.parallel or self.strategy is not None or padded == images:
            # TensorFlow splits an uneven batch itself, in shares of unequal size that Keras weighs by
            # their sizes in the loss and the accuracies it reports: those stay exact unpadded.
            return feed, []
        return PaddedBatches(feed, self.count), [UnpaddedLoss(images, padded)]


def _round_up(n: int, multiple: int) -> int:
    return math.ceil(n / multiple) * multiple


def _multiples_near(batch_size: int, count: int) -> list[int]:
    below = batch_size // count * count
    return [b for b in (below, below + count) if b > 0]


def _batch_sizes(images: int, batch_size: int) -> list[int]:
    return [min(batch_size, images - start) for start in range(0, images, batch_size)]


def _batch_norms(model: keras.Layer) -> Iterator[keras.layers.BatchNormalization]:
    for layer in getattr(model, "layers", ()):  # nested models' layers too (the core is one)
        if isinstance(layer, keras.layers.BatchNormalization):
            yield layer
        else:
            yield from _batch_norms(layer)


def portable(model: keras.Model) -> keras.Model:
    """``model`` with Keras' default unsynchronised BatchNorm, so it saves as a model any backend loads."""
    for layer in _batch_norms(model):
        layer.synchronized = False
    return model


def placement(kind: str) -> Placement:
    """The devices ``kind`` trains on, the backend's distribution set up for them (process-wide: JAX keeps the
    distribution globally, so it is set here, before any model is built)."""
    if kind not in KINDS:
        raise ConfigError(f"distribution is {kind!r}; accepted: {', '.join(KINDS)}")
    devices = tuple(keras.distribution.list_devices())  # accelerators if there are any, else the CPUs
    backend = keras.backend.backend()
    if kind == NONE:
        if backend == "jax":
            keras.distribution.set_distribution(None)
        return Placement(kind, devices[:1])
    if backend == "jax":
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=list(devices)))
        return Placement(kind, devices)
    if backend == "tensorflow":
        # Named explicitly: given none, MirroredStrategy takes the GPUs, or one CPU however many are configured.
        return Placement(kind, devices, backend_check.mirrored_strategy([f"/{device}" for device in devices]))
    raise ConfigError(f"distribution is {kind!r}, which the {backend} backend does not run here; accepted: none, "
                      "or data_parallel with KERAS_BACKEND=jax or tensorflow")


_active: Placement | None = None


def activate(kind: str) -> Placement:
    """Set up ``kind`` (see :func:`placement`) as the process's placement, which :func:`describe` reports."""
    global _active
    _active = placement(kind)
    return _active


def active() -> Placement:
    """The placement set by :func:`activate`; the backend's default device if none was."""
    return _active if _active is not None else Placement(NONE, tuple(keras.distribution.list_devices()[:1]))


def describe(batch_size: int) -> dict[str, Any]:
    """The active placement for a global batch of ``batch_size``: devices, count, batch per device."""
    return active().describe(batch_size)


class FullBatches(keras.utils.PyDataset):
    """The first ``batches`` batches of ``feed``: its last, partial batch left out."""

    def __init__(self, feed: keras.utils.PyDataset, batches: int):
        super().__init__(workers=feed.workers, use_multiprocessing=feed.use_multiprocessing,
                         max_queue_size=feed.max_queue_size)
        self.feed, self.batches = feed, batches

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, index: int):
        if index >= self.batches:
            raise IndexError(index)
        return self.feed[index]

    def on_epoch_end(self) -> None:
        self.feed.on_epoch_end()


class PaddedBatches(keras.utils.PyDataset):
    """``feed``'s (images, targets) batches with sample weights, each padded to a multiple of ``devices`` rows.

    Padding repeats the batch's first rows at weight 0; every batch carries weights (1 for real rows),
    so the feed's structure is the same from batch to batch.
    """

    def __init__(self, feed: keras.utils.PyDataset, devices: int):
        super().__init__(workers=feed.workers, use_multiprocessing=feed.use_multiprocessing,
                         max_queue_size=feed.max_queue_size)
        self.feed, self.devices = feed, devices

    def __len__(self) -> int:
        return len(self.feed)

    def __getitem__(self, index: int):
        x, y = self.feed[index]
        n = len(x)
        extra = _round_up(n, self.devices) - n
        weights = np.concatenate([np.ones(n, "float32"), np.zeros(extra, "float32")])
        if extra:
            take = np.arange(extra) % n
            x = np.concatenate([x, x[take]])
            y = keras.tree.map_structure(lambda t: np.concatenate([t, t[take]]), y)
        return x, y, weights

    def on_epoch_end(self) -> None:
        self.feed.on_epoch_end()


class UnpaddedLoss(keras.callbacks.Callback):
    """Validation losses as means over the ``images`` real images rather than the ``padded`` rows fed.

    Keras averages a batch's loss over all its rows (padding, at weight 0, adds 0 to the sum but 1 to the
    count) and then batches by their row counts, so a validation loss comes out as
    sum / padded (+ the regularisation penalty, added once per batch: a mean of it is itself). Per-output
    losses carry no penalty. Accuracies weigh rows by their weights and need nothing.
    """

    def __init__(self, images: int, padded: int):
        super().__init__()
        self.scale = padded / images

    def on_epoch_end(self, epoch, logs=None):
        if not logs:
            return
        penalty = sum(float(keras.ops.convert_to_numpy(loss)) for loss in self.model.losses)
        for key in [k for k in logs if k.startswith("val_") and k.endswith("loss")]:
            offset = penalty if key == "val_loss" else 0.0
            logs[key] = offset + (float(logs[key]) - offset) * self.scale
