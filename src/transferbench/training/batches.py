"""Feeds memory-mapped uint8 arrays to ``model.fit`` in batches, without tf.data (runs on any backend)."""

from __future__ import annotations

import math

import keras
import numpy as np


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
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order: np.ndarray | None  # a permutation of the images when shuffling, else None (their own order)
        if self.shuffle:
            self.order = np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
        else:
            self.order = None

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index: int):
        lo, hi = index * self.batch_size, min((index + 1) * self.batch_size, len(self.images))
        picked: slice | np.ndarray
        if self.order is None:
            picked = slice(lo, hi)
        else:
            # Sorted indices read the memory map front to back, which is much faster than random order.
            picked = np.sort(self.order[lo:hi])
        x = np.asarray(self.images[picked])
        y = np.asarray(self.targets[picked])
        if self.n_outputs > 1:
            return x, tuple(y[:, i] for i in range(self.n_outputs))
        return x, y

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)
