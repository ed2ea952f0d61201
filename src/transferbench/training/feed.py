"""What ``model.fit`` is fed: the task's batches, with targets for auxiliary outputs where a model has them."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from transferbench.data.task import Task
from transferbench.models.heads import output_names, output_sources
from transferbench.training.batches import ArrayBatches, DeviceBatches


class TargetsPerOutput(keras.utils.PyDataset):
    """Batches whose targets are keyed by output name, the task's repeated for each auxiliary output.

    The data feed knows only the task; a model with auxiliary classifiers (GoogLeNet) trains every
    one of them on the same labels, so this is the one place that knows they exist.
    """

    def __init__(self, batches: ArrayBatches | DeviceBatches, task: Task, names: Sequence[str]):
        super().__init__(workers=batches.workers, use_multiprocessing=batches.use_multiprocessing,
                         max_queue_size=batches.max_queue_size)
        self.batches, self.task, self.names = batches, task, list(names)
        self.source = output_sources(task, self.names)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        return self.batch(self.batches.epoch, index)

    def batch(self, epoch: int, index: int):
        """Batch ``index`` of ``epoch`` (ArrayBatches.batch), its targets keyed by output."""
        x, y, *weights = self.batches.batch(epoch, index)
        by_task = dict(zip(output_names(self.task), y if isinstance(y, (list, tuple)) else (y,), strict=True))
        return x, {name: by_task[self.source[name]] for name in self.names}, *weights

    def on_epoch_end(self) -> None:
        self.batches.on_epoch_end()


def feed_for(model: keras.Model, batches: ArrayBatches | DeviceBatches, task: Task) -> keras.utils.PyDataset:
    """``batches`` as ``model.fit`` needs them: as they are, or with targets for the auxiliary outputs."""
    if len(model.output_names) == task.n_outputs:
        return batches
    return TargetsPerOutput(batches, task, model.output_names)
