"""The feeder alone, no model: images per second that Keras' fit loop receives, per experiment.

    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/feeder.py --epochs 3
    KERAS_BACKEND=jax        venv-jax/bin/python benchmarks/feeder.py --epochs 3

For every experiment in params.yaml (its image shape, batch size and outputs, read through
``transferbench.study``), a synthetic memory-mapped uint8 ``images.npy`` shaped like its prepared
train split is written to a temporary folder and read once (warm page cache). Each method is then
drained through Keras' own ``EpochIterator`` for the backend, exactly as ``model.fit`` takes batches
from it; the first epoch is a warm-up (tracing, page cache) and the best later epoch counts:

- raw: ``ArrayBatches[i]`` in a Python loop, the ceiling of slicing the memory map on one thread;
- pydataset: ``ArrayBatches`` handed to ``fit`` as a ``PyDataset`` (one worker): the feed before
  ``fit_input``. On TensorFlow Keras wraps it in ``tf.data.Dataset.from_generator``;
- project: what ``fit`` hands Keras now (``transferbench.training.batches.fit_input``);
- device (JAX): ``DeviceBatches``, what ``fit`` hands Keras on JAX with a GPU: every array of the
  split held on the device, many batches gathered there in one call (on a CPU, JAX's CPU device);
- device-per-batch (JAX): the same, one batch a call, as before the device feed gathered groups;
- device-host-targets (JAX): the device feed's first design: images gathered on the device, targets
  from the host and class weights by Keras for every batch;
- device-same-batch (JAX): one batch already on the device, handed over for every step: Keras'
  iterator's own work per batch, the most any feed can deliver through it.

``--image-side`` shrinks every image (the batch, targets and weights stay the experiment's): the
device's gather then has almost nothing to copy, as on a GPU, where it takes microseconds, and what is
left is the host's work per batch, which sets the device feed's pace on a GPU.

Experiments that weigh classes (``class_weight: balanced``) get their sample weights in every batch,
as the train stage feeds them (``ArrayBatches.weighted``).

On TensorFlow each step is ``next(iterator)`` inside a ``tf.function``, as Keras' train function
takes it. On JAX each batch is put on the default device and waited for (``jax.device_put``,
``block_until_ready``), the transfer Keras starts one batch ahead on a GPU.

Beside the figures: the images per second one H100-class GPU is assumed to consume for the
experiment's model (``--gpu-images-per-second`` of ResNet-50 at 224x224, scaled by multiply-adds per
image, counted here from the built model), and the feeder's ratio to ten times that.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras.src.trainers.epoch_iterator import EpochIterator  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.common import A100_RESNET50, H100_OVER_A100, macs_per_image  # noqa: E402
from benchmarks.gpu import SameBatch  # noqa: E402
from transferbench.core import backend  # noqa: E402
from transferbench.models.catalog import MODELS  # noqa: E402
from transferbench.models.heads import aux_output_names, output_names  # noqa: E402
from transferbench.study.experiments import Experiment, resolve  # noqa: E402
from transferbench.study.params import load_params  # noqa: E402
from transferbench.training.batches import ArrayBatches, DeviceBatches, class_weights, fit_input  # noqa: E402


def experiment_names() -> list[str]:
    return list(load_params().experiments)


def make_split(experiment: Experiment, megabytes: float, folder: Path,
               side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A memory-mapped uint8 images.npy of the experiment's shape (``side`` x ``side`` where given; 32 to
    1,000 batches) and its targets."""
    batch, shape = experiment.settings.batch_size, experiment.image_shape
    if side is not None:
        shape = (side, side, shape[2])
    per_image = int(np.prod(shape))
    n = max(32 * batch, min(1000 * batch, int(megabytes * 2**20 // per_image) // batch * batch))
    path = folder / f"{experiment.name}.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, *shape))
    rng = np.random.default_rng(0)
    for lo in range(0, n, 256):
        images[lo:lo + 256] = rng.integers(0, 256, images[lo:lo + 256].shape, dtype=np.uint8)
    images.flush()
    del images
    task = experiment.task
    targets = rng.integers(0, max(2, task.n_classes), (n, task.n_outputs) if task.n_outputs > 1 else (n,))
    mapped = np.load(path, mmap_mode="r")
    np.asarray(mapped).sum()  # warm the page cache
    return mapped, targets


def model_outputs(experiment: Experiment) -> list[str]:
    """The built model's output names (with auxiliary classifiers), without building it."""
    task, spec = experiment.task, MODELS.get(experiment.settings.model)
    names = output_names(task)
    for index in range(1, len(spec.aux_loss_weights) + 1):
        names += aux_output_names(task, index)
    return names


def weights(experiment: Experiment, targets: np.ndarray) -> dict[int, float] | None:
    return class_weights(experiment.settings.class_weight, targets, experiment.task.n_classes)


def split_batches(experiment: Experiment, images: np.ndarray, targets: np.ndarray, workers: int = 1,
                  weighted: bool = True) -> ArrayBatches:
    """The train split's batches as the train stage makes them (classes weighed in them, unless not ``weighted``)."""
    batches = ArrayBatches(images, targets, experiment.settings.batch_size, n_outputs=experiment.task.n_outputs,
                           shuffle=True, seed=0, workers=workers)
    return batches.weighted(weights(experiment, targets)) if weighted else batches


def per_output(experiment: Experiment, batches: keras.utils.PyDataset) -> keras.utils.PyDataset:
    """``batches`` wrapped for auxiliary outputs, as fit does."""
    from transferbench.training.feed import TargetsPerOutput

    task = experiment.task
    names = model_outputs(experiment)
    return batches if len(names) == task.n_outputs else TargetsPerOutput(batches, task, names)


def feed(experiment: Experiment, images: np.ndarray, targets: np.ndarray,
         workers: int = 1) -> keras.utils.PyDataset:
    """The train split's batches as fit reads them on the host."""
    return per_output(experiment, split_batches(experiment, images, targets, workers))


class HostTargets(keras.utils.PyDataset):
    """The device feed's first design (``device-host-targets``): the images from a ``DeviceBatches``
    gathering one batch a call, the targets from its source on the host (Keras moves them each step)."""

    def __init__(self, device: DeviceBatches):
        super().__init__()
        self.device = device

    def __len__(self) -> int:
        return len(self.device)

    def batch(self, epoch: int, index: int):
        return self.device.batch(epoch, index)[0], self.device.source.targets_of(self.device.source.picked(epoch,
                                                                                                        index))

    def __getitem__(self, index: int):
        return self.batch(self.device.epoch, index)

    @property
    def epoch(self) -> int:
        return self.device.epoch

    def on_epoch_end(self) -> None:
        self.device.on_epoch_end()


def drain(iterator: EpochIterator) -> Callable[[], int]:
    """One epoch through Keras' epoch iterator, each batch taken as the backend's train step takes it.

    On TensorFlow the epoch's ``next(iterator)`` calls run in one ``tf.function`` loop (as with a large
    ``steps_per_execution``): a Python call per step costs about as much as the feeder itself here
    and belongs to the train loop, not to the feeder. Like Keras, a new iterator starts each epoch
    unless ``steps_per_epoch`` was given.
    """
    steps = iterator.num_batches
    if keras.backend.backend() == "tensorflow":
        tf = backend.tensorflow()

        @tf.function
        def take(it, count):
            seen = tf.constant(0, tf.int64)
            for _ in tf.range(count):
                seen += tf.cast(tf.shape(keras.tree.flatten(next(it))[0])[0], tf.int64)
            return seen

        dataset, current = iterator._get_iterator(), None

        def tf_epoch() -> int:
            nonlocal current
            if current is None or iterator.steps_per_epoch is None:
                current = iter(dataset)
            return int(take(current, tf.constant(steps, tf.int64)))

        return tf_epoch

    import jax

    def jax_epoch() -> int:
        seen = 0
        with iterator.catch_stop_iteration():
            for _, _, it in iterator:
                data = jax.device_put(next(it))
                jax.block_until_ready(data)
                seen += int(keras.tree.flatten(data)[0].shape[0])
        return seen

    return jax_epoch


def drain_dataset(name: str, data: keras.utils.PyDataset) -> Callable[[], int]:
    """TensorFlow only: one epoch of a dataset drained in one ``tf.function``, without Keras' epoch
    iterator: ``generator-direct`` is Keras' ``from_generator`` dataset for the PyDataset,
    ``pipeline-direct`` the one ``fit_input`` builds (afresh each epoch, as ``project``)."""
    tf = backend.tensorflow()
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    @tf.function
    def count(dataset):
        seen = tf.constant(0, tf.int64)
        for batch in dataset:
            seen += tf.cast(tf.shape(keras.tree.flatten(batch)[0])[0], tf.int64)
        return seen

    generator = PyDatasetAdapter(data, shuffle=False).get_tf_dataset()
    epoch = 0

    def run() -> int:
        nonlocal epoch
        dataset = generator if name == "generator-direct" else fit_input(data, initial_epoch=epoch,
                                                                         epochs=epoch + 1)[0]
        epoch += 1
        return int(count(dataset))

    return run


def epoch_iterator(x, steps: int | None, class_weight: dict[int, float] | None = None) -> EpochIterator:
    if keras.backend.backend() == "tensorflow":
        tf = backend.tensorflow()
        from keras.src.backend.tensorflow.trainer import TFEpochIterator

        return TFEpochIterator(x=x, steps_per_epoch=steps, shuffle=False, class_weight=class_weight,
                               distribute_strategy=tf.distribute.get_strategy())
    from keras.src.backend.jax.trainer import JAXEpochIterator

    return JAXEpochIterator(x=x, steps_per_epoch=steps, shuffle=False, class_weight=class_weight)


def device_method(name: str, experiment: Experiment, images: np.ndarray, targets: np.ndarray) -> Callable[[], int]:
    """JAX only: one epoch of the device feed (``device``) or of an earlier design of it."""
    if keras.backend.backend() != "jax":
        raise SystemExit(f"--methods {name} reads batches held by JAX; the backend is {keras.backend.backend()}")
    if name in ("device", "device-per-batch"):
        one_a_call = name == "device-per-batch"
        device = DeviceBatches(split_batches(experiment, images, targets), group=1 if one_a_call else None)
        return drain(epoch_iterator(per_output(experiment, device), None))
    if name == "device-same-batch":
        held = per_output(experiment, DeviceBatches(split_batches(experiment, images, targets)))
        return drain(epoch_iterator(SameBatch(held[0], len(held)), None))
    baseline = HostTargets(DeviceBatches(split_batches(experiment, images, targets, weighted=False), group=1))
    return drain(epoch_iterator(per_output(experiment, baseline), None, weights(experiment, targets)))


def method(name: str, data: keras.utils.PyDataset, threaded: keras.utils.PyDataset) -> Callable[[], int]:
    """A function that runs one epoch of ``name`` and returns the images it delivered."""
    if name == "raw":
        def raw() -> int:
            return sum(len(keras.tree.flatten(data[i])[0]) for i in range(len(data)))
        return raw
    if name == "pydataset":
        return drain(epoch_iterator(data, None))
    if name == "workers":  # the PyDataset read by Keras' thread workers (--workers)
        return drain(epoch_iterator(threaded, None))
    if name.endswith("-direct"):
        return drain_dataset(name, data)
    epoch = 0

    def project() -> int:
        # A pipeline per timed epoch: one spanning every epoch would go on prefetching while the
        # other methods are timed, and start each of its epochs with batches made for free.
        nonlocal epoch
        x, steps = fit_input(data, initial_epoch=epoch, epochs=epoch + 1)
        epoch += 1
        return drain(epoch_iterator(x, steps))()

    return project


def interleaved(runs: dict[str, Callable[[], int]], epochs: int) -> dict[str, list[tuple[float, float]]]:
    """(images per wall second, CPU microseconds per image) of every epoch of every method.

    Each round runs one epoch of each method in turn, so load from other processes falls on all of
    them alike. CPU time is this process's, all its threads (tf.data's, Keras' workers) together: on
    a shared machine it moves far less than wall time, and cores / CPU time per image is the rate
    the feeder reaches on a host with that many cores free for it.
    """
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(epochs):
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            n = run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rates[name].append((n / wall, 1e6 * cpu / n))
    return rates


def gpu_images_per_second(experiment: Experiment, resnet50_macs: int) -> tuple[float, int]:
    """(assumed H100 training images/s, multiply-adds per image) of the experiment's whole model."""
    from transferbench.training.fit import build_model

    model = build_model(experiment, None)
    macs = macs_per_image(model)
    keras.backend.clear_session()
    return A100_RESNET50 * H100_OVER_A100 * resnet50_macs / macs, macs


def rows(names: list[str], methods: list[str], megabytes: float, epochs: int, gpu: bool,
         workers: int, side: int | None = None) -> Iterator[str]:
    params = load_params()
    resnet50 = macs_per_image(keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))) if gpu else 0
    if gpu:
        print(f"ResNet-50 at 224x224: {resnet50 / 1e9:.2f} G multiply-adds per image")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            experiment = resolve(params, name)
            images, targets = make_split(experiment, megabytes, Path(tmp), side)
            data = feed(experiment, images, targets)
            threaded = feed(experiment, images, targets, workers=workers)
            rates = interleaved({m: device_method(m, experiment, images, targets) if m.startswith("device")
                                 else method(m, data, threaded) for m in methods}, epochs)
            # The first round is a warm-up; each method keeps its best wall rate and its least CPU.
            best = {m: max(r[0] for r in rates[m][1:]) for m in methods}
            cpu = {m: min(r[1] for r in rates[m][1:]) for m in methods}
            h, w = images.shape[1:3]
            cells = [name, f"{w}x{h}", str(experiment.settings.batch_size), f"{len(images):,}"]
            if gpu:
                assumed, macs = gpu_images_per_second(experiment, resnet50)
                cells += [f"{macs / 1e9:.2f}", f"{assumed:,.0f}"]
            cells += [f"{best[m]:,.0f} ({cpu[m]:,.0f} µs)" for m in methods]
            if gpu:
                cells.append(f"{best[methods[-1]] / (10 * assumed):.2f}")
                cells.append(f"{10 * assumed * cpu[methods[-1]] / 1e6:.1f}")
            cells.append(" / ".join(f"{m}: " + " ".join(f"{r:,.0f}" for r, _ in rates[m]) for m in methods))
            yield "| " + " | ".join(cells) + " |"
            images._mmap.close()  # type: ignore[attr-defined]  # the temporary folder can go


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="*", default=None, help="default: every experiment in params.yaml")
    parser.add_argument("--methods", nargs="*", default=["raw", "pydataset", "project"],
                        choices=["raw", "pydataset", "project", "workers", "generator-direct", "pipeline-direct",
                                 "device", "device-per-batch", "device-host-targets", "device-same-batch"])
    parser.add_argument("--workers", type=int, default=4, help="Keras' thread workers of the `workers` method")
    parser.add_argument("--megabytes", type=float, default=256.0,
                        help="size of each synthetic split (32 to 1,000 batches)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per method; the first is a warm-up")
    parser.add_argument("--no-gpu-estimate", action="store_true", help="skip building the models to count FLOPs")
    parser.add_argument("--image-side", type=int, default=None,
                        help="images this many pixels a side, not the experiment's: the host's work per batch")
    args = parser.parse_args()
    if args.epochs < 2:
        raise SystemExit(f"--epochs must be at least 2 (the first is a warm-up), got {args.epochs}")
    if args.image_side is not None and args.image_side < 1:
        raise SystemExit(f"--image-side must be at least 1 pixel, got {args.image_side}")
    names = args.experiments or experiment_names()
    gpu = not args.no_gpu_estimate
    print(common.machine(f"Keras {keras.__version__}", f"backend {keras.backend.backend()}"))
    print(f"{os.cpu_count()} CPUs online; epochs {args.epochs} (the first a warm-up), {args.megabytes:g} MB per split")
    header = ["experiment", "input", "batch", "images"]
    if gpu:
        header += ["G MACs/image", "assumed H100 images/s"]
    header += [f"{m} images/s (CPU per image)" for m in args.methods]
    if gpu:
        header += [f"{args.methods[-1]} / (10 x H100)", "cores for 10 x H100"]
    header.append("every epoch")
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows(names, args.methods, args.megabytes, args.epochs, gpu, args.workers, args.image_side):
        print(row, flush=True)


if __name__ == "__main__":
    main()
