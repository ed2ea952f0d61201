"""One-shot GPU benchmark: training images/s of every experiment's model at the reference studies' shapes
and batches.

    KERAS_BACKEND=jax PYTHONPATH=src python benchmarks/gpu.py                  # on a GPU machine
    KERAS_BACKEND=jax PYTHONPATH=src python benchmarks/gpu.py --tiny --steps 2 --experiments cats_and_dogs_filtered_cnn

k training processes per GPU (params' ``gpu_runs_per_device``), the CAPTCHA row at mixed precision, the small
CNN with and without several steps per call, and the whole study's projected time on one GPU at each
experiment's best k, in one command made to finish within 10 minutes on one H100 (each part is saved as it
is measured, in this order, so a run cut short keeps what came first):

    KERAS_BACKEND=jax PYTHONPATH=src timeout 590 python benchmarks/gpu.py --together pets,captcha \
        --per-gpu 1,2,4,8 --together-seconds 10 --alone-seconds 0 --precisions mixed_float16 --feeds device \
        --epochs 1 --experiments captcha,cats_and_dogs_filtered_cnn,cats_and_dogs_filtered,dogs_vs_cats,cifar10 \
        --json tmp/gpu_k_per_gpu.json

``--together``: for each k of ``--per-gpu``, k processes (this file with ``--worker``) each train the
experiment as the train stage's workers do (each its ``XLA_PYTHON_CLIENT_MEM_FRACTION`` share of the GPU
for k > 1, the feed the stage picks in that share: the device-held images only while the whole training
split fits, several steps per call where the stage runs them), all timed at once for
``--together-seconds`` after their warm-up epochs (a barrier: they compile first, sharing JAX's
compilation cache); images/s per GPU is their sum. Each k's figure projects the experiment's training on
one GPU by the stage's schedule (every arm's tuning trials, then its runs, k at a time: ``makespan``); the
study table takes each experiment's best k, and k = 1 (the fit part's figure) for those not run together.
This process starts its backend only after them (on JAX it would take 75% of the GPU's memory).

It needs only ``keras``, ``numpy`` and one backend (JAX or TensorFlow) besides the project's model
code: no params parsing, tracking or data stack, no network (random weights), so it runs from a copy
of the repository on a bare GPU machine. Per experiment, first the feeder alone, no model: images per
second that Keras' JAX epoch iterator delivers on the device from the host and the device feeds (each
batch put on the device, at most two in flight, as Keras prefetches), against ten times the
mixed-precision ceiling (below), and against ten times an H100's rate assumed from ResNet-50's
(benchmarks.common: scaled by multiply-adds per image); beside them the device feed gathering one batch
a call (its design before it gathered groups), the baseline, and the device feed in a plain loop.

Then, in the mixed precision the train stage turns on with a GPU (``mixed_float16``) and in float32
(``--precisions``: that order by default, so a run on a time limit has the figures the feeder's target
and the projection need first), it times whole epochs of ``model.fit`` after a warm-up epoch (which
compiles the train step), fed three ways:

- ceiling: one synthetic batch already on the device, fed again every step: the model alone, what
  the GPU consumes;
- host: the train stage's ``ArrayBatches`` over a memory-mapped uint8 ``images.npy`` (shuffled,
  sorted reads; the file in the page cache, as prepared data of this size is), as ``fit_input`` hands
  it to Keras: a ``PyDataset`` on JAX, a ``tf.data`` pipeline on TensorFlow;
- device (JAX): ``DeviceBatches``, the images copied to the device once and the batches gathered there,
  many in one call, what the train stage feeds on JAX with a GPU.

From the train stage's feed at mixed precision (device on JAX, host on TensorFlow) it projects the
wall time of the reference studies' ``dvc repro`` on one GPU: training images x epochs x runs (arms x seeds, and
the tuning trials: arms x factors x their share of the epochs) / images per second, per experiment.
It leaves out data download, CAPTCHA generation, preparation and validation, weight downloads,
validation and test passes, model compilation, and that fixed-feature arms (frozen base) train faster
than a whole model: a figure for the training work alone, at the whole model's rate.

Prints two markdown tables and writes the figures to ``--json`` (default ``tmp/gpu_benchmark.json``) after
each part of each experiment, so a run stopped by a time limit keeps what it measured; a figure not
measured reads "n/a".
``RECIPES`` is the reference studies' recipes as params.yaml sets them
(tests/integration/test_gpu_benchmark.py keeps them equal).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]  # benchmarks.common and the package, from a plain copy

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import A100_RESNET50, H100_OVER_A100, machine, macs_per_image  # noqa: E402
from transferbench.data.task import Task  # noqa: E402
from transferbench.models.assembly import assemble_model, compile_outputs, make_optimizer  # noqa: E402
from transferbench.models.backbones import build_core  # noqa: E402
from transferbench.models.catalog import MODELS, HeadOptions  # noqa: E402
from transferbench.training.batches import (  # noqa: E402
    ArrayBatches,
    DeviceBatches,
    class_weights,
    feed_kind,
    fit_input,
)
from transferbench.training.feed import feed_for  # noqa: E402

# mixed_float16: what the train stage sets on a GPU. In this order by default: the figures the feeder's target
# and the projection need come first, so a run on a time limit keeps them.
PRECISIONS = ("mixed_float16", "float32")
FEEDS = ("ceiling", "host", "device")
ALONE_SECONDS = 1.0  # the feeder alone: whole epochs until at least this long, after a warm-up epoch


@dataclass(frozen=True)
class Recipe:
    """What one experiment trains at the reference studies' scale (params.yaml) and how many times (arms x seeds)."""

    model: str
    height: int
    width: int
    task: Task
    pooling: str
    head: str
    head_units: int
    head_dropout: float
    augment: str
    optimizer: str
    learning_rate: float
    batch_size: int
    epochs: int
    train_images: int  # the reference study's training split (pets: its counts; ours may differ a little)
    runs: int  # arms x seeds: every run trains the whole recipe
    class_weight: str = "none"  # balanced: each batch carries sample weights, as the train stage feeds them
    # params' tuning grid in whole runs: arms x factors x the share of the epochs each trial trains
    tuning_runs: float = 0.0
    arms: int = 1  # arms x shares of the training split: what tunes, each once, before its seeds' runs
    factors: int = 0  # tuning trials per arm (0: untuned)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)


RECIPES: dict[str, Recipe] = {
    "pets": Recipe("xception", 100, 100, Task("multiclass", 3), "max", "dense", 0, 0.0, "flip", "adam", 0.001,
                   16, 30, 248_468, 9, "balanced", tuning_runs=2.25, arms=3, factors=3),
    "captcha": Recipe("xception", 80, 160, Task("multihead", 36, 6), "max", "dense", 0, 0.0, "none", "adam", 0.001,
                      16, 30, 200_000, 9, tuning_runs=2.25, arms=3, factors=3),
    "dogs_vs_cats": Recipe("vgg16", 224, 224, Task("binary", 2), "flatten", "dense", 256, 0.6, "none", "sgd", 0.0001,
                           25, 50, 2_000, 9, tuning_runs=2.25, arms=3, factors=3),
    "cats_and_dogs_filtered_cnn": Recipe("cnn", 150, 150, Task("binary", 2), "flatten", "dense", 512, 0.0, "none",
                                         "rmsprop", 0.001, 20, 15, 2_000, 3, tuning_runs=0.75, arms=1, factors=3),
    "cats_and_dogs_filtered": Recipe("xception", 150, 150, Task("binary", 2), "avg", "dense", 0, 0.2, "flip", "adam",
                                     0.001, 20, 15, 2_000, 9, tuning_runs=2.25, arms=3, factors=3),
    "cifar10": Recipe("googlenet", 224, 224, Task("multiclass", 10), "avg", "dense", 0, 0.4, "none", "sgd", 0.01,
                      256, 25, 45_000, 3, tuning_runs=0.75, arms=1, factors=3),
}

TINY_BATCH = 2  # --tiny: the smallest input each model takes, two images a batch: a CPU check of the code path


class SameBatch(keras.utils.PyDataset):
    """``steps`` batches that are all one batch, already on the device: training with no feeding at all."""

    def __init__(self, batch, steps: int):
        super().__init__()
        self.batch, self.steps = batch, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        return self.batch


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds per epoch. Epoch hooks only: a batch hook would sync host and device every step."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def tiny(recipe: Recipe) -> Recipe:
    size = max(MODELS.get(recipe.model).min_size, 32)
    return replace(recipe, height=size, width=size, batch_size=TINY_BATCH)


def random_data(recipe: Recipe, n: int, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random uint8 images in ``folder/images.npy`` (memory-mapped back) and random targets."""
    rng = np.random.default_rng(0)
    images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8, shape=(n, *recipe.shape))
    block = rng.integers(0, 256, (min(n, 64), *recipe.shape), dtype=np.uint8)
    for start in range(0, n, len(block)):  # tiled: the values do not matter to the speed, the bytes read do
        images[start:start + len(block)] = block[:n - start]
    images.flush()
    del images
    task = recipe.task
    targets = rng.integers(0, task.n_classes, (n, task.n_outputs) if task.n_outputs > 1 else (n,))
    return np.load(folder / "images.npy", mmap_mode="r"), targets


def build(recipe: Recipe, precision: str, steps_per_execution: int = 1) -> keras.Model:
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        options = HeadOptions(units=recipe.head_units, dropout=recipe.head_dropout)
        model = assemble_model(recipe.model, build_core(recipe.model, recipe.shape), recipe.shape, recipe.task,
                               pooling=recipe.pooling, head=recipe.head, head_options=options,
                               augment=recipe.augment)
        compile_outputs(model, recipe.model, recipe.head, recipe.task,
                        make_optimizer(recipe.optimizer, recipe.learning_rate), steps_per_execution=steps_per_execution)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    return model


def on_device(feed: keras.utils.PyDataset):
    """One batch of ``feed`` as the backend's tensors; on TensorFlow a repeating dataset of it (a PyDataset
    goes through a Python generator there, which would copy it from the host every step)."""
    batch = keras.tree.map_structure(keras.ops.convert_to_tensor, tuple(feed[0]))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.data.Dataset.from_tensors(batch).repeat()
    return SameBatch(batch, len(feed))


def jax_backend() -> bool:
    return keras.backend.backend() == "jax"


def stage_feed() -> str:
    """The feed the train stage gives fit with a GPU: the device-held images on JAX, the host's on TensorFlow."""
    return "device" if jax_backend() else "host"


def images_per_second(model: keras.Model, data, steps: int | None, batch: int, epochs: int) -> float:
    """Best timed epoch of ``epochs`` after one warm-up epoch; ``steps`` batches of ``batch`` images each."""
    timer = EpochTimer()
    model.fit(data, epochs=1 + epochs, steps_per_epoch=steps, callbacks=[timer], verbose=0, shuffle=False)
    return (steps or len(data)) * batch / min(timer.seconds[1:])


def fed(model: keras.Model, batches: ArrayBatches, recipe: Recipe, steps: int, epochs: int,
        feeds: tuple[str, ...] = FEEDS) -> dict[str, float]:
    """images/s of ``model.fit`` on each of ``feeds``. Same shapes and dtypes for all, so they share the compiled
    step."""
    batch = recipe.batch_size
    host = feed_for(model, batches, recipe.task)
    figures = {}
    if "ceiling" in feeds:
        figures["ceiling"] = images_per_second(model, on_device(host), steps, batch, epochs)
    if "host" in feeds:
        x, per_epoch = fit_input(host, initial_epoch=0, epochs=1 + epochs)  # tf.data on TensorFlow, as with a GPU
        figures["host"] = images_per_second(model, x, per_epoch, batch, epochs)
    if "device" in feeds and jax_backend():
        figures["device"] = images_per_second(model, *stage_input(model, batches, recipe, "device", 1 + epochs),
                                              batch, epochs)
    return figures


def stage_input(model: keras.Model, batches: ArrayBatches, recipe: Recipe, feed: str, epochs: int):
    """``(x, steps_per_epoch)`` as the train stage hands ``fit`` with a GPU: the device-held images (``device``,
    JAX), else the host's batches (a tf.data pipeline over ``epochs`` epochs on TensorFlow)."""
    if feed == "device":
        return feed_for(model, DeviceBatches(batches), recipe.task), None
    return fit_input(feed_for(model, batches, recipe.task), initial_epoch=0, epochs=epochs)


def per_call(recipe: Recipe, precision: str, count: int, batches: ArrayBatches, feed: str, steps: int,
             epochs: int) -> float:
    """images/s of the model compiled to run ``count`` training steps per call (steps_per_execution), on ``feed``."""
    model = build(recipe, precision, count)
    return images_per_second(model, *stage_input(model, batches, recipe, feed, 1 + epochs), recipe.batch_size, epochs)


def images_arriving(epoch: Callable[[int], Iterator], seconds: float) -> float:
    """images/s of batches arriving on the device: ``epoch(n)`` yields epoch ``n``'s batches, each waited for
    once two newer ones are in flight (as Keras prefetches); whole epochs until ``seconds`` have passed,
    after one warm-up epoch."""
    import jax

    def run(number: int) -> int:
        seen, pending = 0, deque()
        for batch in epoch(number):
            seen += int(keras.tree.flatten(batch)[0].shape[0])
            pending.append(batch)
            if len(pending) > 2:
                jax.block_until_ready(pending.popleft())
        jax.block_until_ready(list(pending))
        return seen

    run(0)
    seen, start, number = 0, time.perf_counter(), 1
    while time.perf_counter() - start < seconds:
        seen += run(number)
        number += 1
    return seen / (time.perf_counter() - start)


def drained(feed: keras.utils.PyDataset, seconds: float) -> float:
    """The feeder alone: images/s that Keras' JAX epoch iterator delivers on the device from ``feed``, each
    batch put on the device as Keras' JAX trainer puts it (a no-op for device arrays)."""
    import jax
    from keras.src.backend.jax.trainer import JAXEpochIterator

    iterator = JAXEpochIterator(x=feed, shuffle=False)

    def epoch(_: int) -> Iterator:  # the iterator keeps its own epoch count
        with iterator.catch_stop_iteration():
            for _, _, it in iterator:
                yield jax.device_put(next(it))

    return images_arriving(epoch, seconds)


def gathered(feed: DeviceBatches, seconds: float) -> float:
    """The device feed's own rate: its batches' images in a plain loop, without Keras' iterator."""
    return images_arriving(lambda number: (feed.batch(number, i)[0] for i in range(len(feed))), seconds)


def feeder_alone(batches: ArrayBatches, seconds: float) -> dict[str, float]:
    """images/s from the host and device feeds with no model (JAX: Keras' TensorFlow iterator is another path);
    ``device_per_batch``: the device feed gathering one batch a call, as it did before it gathered groups;
    ``device_own``: the device feed without Keras' iterator, what the feed itself costs per batch."""
    if not jax_backend():
        return {}
    device = DeviceBatches(batches)
    return {"host": drained(batches, seconds), "device": drained(device, seconds),
            "device_per_batch": drained(DeviceBatches(batches, group=1), seconds),
            "device_own": gathered(device, seconds)}


def resnet50_macs() -> int:
    """ResNet-50's multiply-adds per 224x224 image, which the published training rate is for."""
    macs = macs_per_image(keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3)))
    keras.backend.clear_session()
    return macs


def measure(name: str, recipe: Recipe, steps: int, epochs: int, folder: Path, resnet50: int,
            alone_seconds: float, precisions: tuple[str, ...], save: Callable[[dict], None],
            feeds: tuple[str, ...] = FEEDS) -> dict:
    """images/s of one experiment's feeders alone (none with ``alone_seconds`` 0), then of its model per precision
    and feed, in that order, and for a model the train stage runs several steps per call (its catalog entry's
    steps_per_execution) the stage's feed at that count too: the row so far goes to ``save`` after each part, so
    a run stopped by a time limit keeps what it measured."""
    batch = recipe.batch_size
    images, targets = random_data(recipe, steps * batch, folder)

    weights = class_weights(recipe.class_weight, targets, recipe.task.n_classes)

    def batches() -> ArrayBatches:
        return ArrayBatches(images, targets, batch, n_outputs=recipe.task.n_outputs, shuffle=True,
                            seed=0).weighted(weights)

    work = recipe.train_images * recipe.epochs * (recipe.runs + recipe.tuning_runs)
    figures: dict[str, dict[str, float]] = {}
    row = {"experiment": name, **{k: v for k, v in asdict(recipe).items() if k != "task"},
           "task": asdict(recipe.task), "steps": steps, "images_per_second": figures, "stage_feed": stage_feed(),
           "feeder_alone": feeder_alone(batches(), alone_seconds) if alone_seconds > 0 else {},
           "training_images": work}
    if row["feeder_alone"]:
        print(f"{name} feeder alone: " + ", ".join(f"{k} {rate(v)} images/s" for k, v in row["feeder_alone"].items()),
              file=sys.stderr, flush=True)
    save(row)
    for precision in precisions:
        model = build(recipe, precision)
        if "macs_per_image" not in row:
            row["macs_per_image"] = macs = macs_per_image(model)
            row["assumed_h100"] = A100_RESNET50 * H100_OVER_A100 * resnet50 / macs
        feed = stage_feed()
        figures[precision] = fed(model, batches(), recipe, steps, epochs, tuple(dict.fromkeys((*feeds, feed))))
        print(f"{name} {precision}: " + ", ".join(f"{k} {rate(v)} images/s" for k, v in figures[precision].items()),
              file=sys.stderr, flush=True)
        stage_rate = figures[precision][feed]
        if (count := MODELS.get(recipe.model).steps_per_call(steps)) > 1:  # the small CNN: several steps per call
            faster = per_call(recipe, precision, count, batches(), feed, steps, epochs)
            row.setdefault("steps_per_execution", {})[precision] = {"count": count, "feed": feed, "one": stage_rate,
                                                                     "many": faster}
            print(f"{name} {precision}: {feed} feed, {count} steps per call {rate(faster)} images/s "
                  f"({faster / stage_rate:.2f}x one step per call)", file=sys.stderr, flush=True)
            stage_rate = faster  # what the train stage runs
        if precision == "mixed_float16":
            row["stage_rate"] = stage_rate
            row["projected_seconds"] = work / stage_rate
        save(row)
        del model
        keras.backend.clear_session()
    (folder / "images.npy").unlink()
    return row


# ---- k training processes on one GPU (params' gpu_runs_per_device) --------------------------------------------

# The share of a GPU's memory its k processes preallocate together, as transferbench.core.devices gives the
# train stage's workers (that module reads paths.yaml with PyYAML, which a bare GPU machine lacks; a test keeps
# the two equal).
SHARED_MEMORY = 0.8
WORKER_EPOCHS = 100_000  # a worker's fit runs until its timed seconds are up; this only bounds it
BARRIER_SECONDS = 900.0  # how long the workers of one k may take to start and compile before the run gives up


def memory_fraction(k: int) -> str:
    """XLA_PYTHON_CLIENT_MEM_FRACTION of each of ``k`` processes on one GPU."""
    return f"{SHARED_MEMORY / k:.3f}"


class TimedAfterBarrier(keras.callbacks.Callback):
    """After the warm-up epoch (which compiles), say so and wait on stdin until every process is ready; then time
    whole epochs for ``seconds`` and stop. All the processes of one k train at once while timed."""

    def __init__(self, seconds: float, images_per_epoch: int):
        super().__init__()
        self.seconds, self.images_per_epoch = seconds, images_per_epoch
        self.images, self.elapsed = 0, 0.0

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            print("ready", flush=True)
            sys.stdin.readline()
            self._start = time.perf_counter()
            return
        self.images += self.images_per_epoch
        self.elapsed = time.perf_counter() - self._start
        if self.elapsed >= self.seconds:
            self.model.stop_training = True


def worker(spec: dict) -> None:
    """One of k processes (``--worker``): the train stage's run of an experiment at mixed precision on the feed
    the stage would choose in this process's memory share (the device-held images only while the whole
    training split fits it), several steps per call where the stage runs them; prints its images and seconds."""
    recipe = tiny(RECIPES[spec["experiment"]]) if spec["tiny"] else RECIPES[spec["experiment"]]
    folder = Path(spec["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    steps, batch = spec["steps"], recipe.batch_size
    images, targets = random_data(recipe, steps * batch, folder)
    batches = ArrayBatches(images, targets, batch, n_outputs=recipe.task.n_outputs, shuffle=True, seed=spec["index"])
    batches = batches.weighted(class_weights(recipe.class_weight, targets, recipe.task.n_classes))
    whole_split = recipe.train_images * int(np.prod(recipe.shape))  # uint8 images, as prepared
    feed = "device" if jax_backend() and feed_kind(whole_split) == "device" else "host"
    count = MODELS.get(recipe.model).steps_per_call(steps)
    model = build(recipe, spec["precision"], count)
    x, per_epoch = stage_input(model, batches, recipe, feed, WORKER_EPOCHS)
    timer = TimedAfterBarrier(spec["seconds"], steps * batch)
    model.fit(x, epochs=WORKER_EPOCHS, steps_per_epoch=per_epoch, callbacks=[timer], verbose=0, shuffle=False)
    print(json.dumps({"images": timer.images, "seconds": timer.elapsed, "feed": feed, "steps_per_execution": count,
                      "devices": devices()}), flush=True)


def run_together(name: str, k: int, args: argparse.Namespace, folder: Path) -> dict:
    """``k`` worker processes training ``name`` at once on this machine's one (visible) GPU: their summed rate."""
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(folder / "jax-cache"),  # compiled once, then read back
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    if k > 1:  # as the train stage's workers: each its share of the GPU's memory
        env.update(XLA_PYTHON_CLIENT_MEM_FRACTION=memory_fraction(k), TF_FORCE_GPU_ALLOW_GROWTH="true")
    processes = []
    for index in range(k):
        spec = {"experiment": name, "tiny": args.tiny, "precision": args.together_precision, "steps": args.steps,
                "seconds": args.together_seconds, "folder": str(folder / f"{name}-k{k}-{index}"), "index": index}
        processes.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env))
    try:
        deadline = time.monotonic() + BARRIER_SECONDS
        for process in processes:  # each says ready once compiled and warmed up
            while (line := process.stdout.readline()) and line.strip() != "ready":  # type: ignore[union-attr]
                if time.monotonic() > deadline:
                    break
            if not line:
                raise RuntimeError(f"{name} k={k}: a worker ended before it was ready (exit {process.wait()})")
        for process in processes:
            process.stdin.write("go\n")  # type: ignore[union-attr]
            process.stdin.flush()  # type: ignore[union-attr]
        results = [json.loads(process.communicate(timeout=BARRIER_SECONDS)[0].strip().splitlines()[-1])
                   for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    per_process = [r["images"] / r["seconds"] for r in results]
    return {"k": k, "feed": results[0]["feed"], "steps_per_execution": results[0]["steps_per_execution"],
            "devices": results[0]["devices"],
            "per_process": per_process, "images_per_second": sum(per_process),
            "memory_fraction": env.get("XLA_PYTHON_CLIENT_MEM_FRACTION")}


def makespan(recipe: Recipe, k: int, per_process: float) -> float:
    """Seconds the train stage takes for ``recipe``'s runs with ``k`` at once, each at ``per_process`` images/s:
    every arm's tuning trials first (queued in order), an arm's runs queued once its trials are done, each job
    to the first free slot (transferbench.training.workers)."""
    run = recipe.train_images * recipe.epochs / per_process
    seeds = recipe.runs // recipe.arms
    queue = [("trial", arm) for arm in range(recipe.arms) for _ in range(recipe.factors)] if recipe.factors else \
        [("run", arm) for arm in range(recipe.arms) for _ in range(seeds)]
    trial = run * recipe.tuning_runs / (recipe.arms * recipe.factors) if recipe.factors else 0.0
    left = {arm: recipe.factors for arm in range(recipe.arms)}
    running: list[tuple[float, int, str, int]] = []  # (finish, order, kind, arm)
    now, order = 0.0, 0
    while queue or running:
        while queue and len(running) < k:
            kind, arm = queue.pop(0)
            order += 1
            heapq.heappush(running, (now + (trial if kind == "trial" else run), order, kind, arm))
        now, _, kind, arm = heapq.heappop(running)
        if kind == "trial":
            left[arm] -= 1
            if left[arm] == 0:
                queue.extend(("run", arm) for _ in range(seeds))
    return now


def together(name: str, ks: tuple[int, ...], args: argparse.Namespace, folder: Path,
             save: Callable[[dict], None]) -> dict:
    """images/s per GPU of ``name`` with k = each of ``ks`` processes at once, and the stage's projected time at
    each k; saved after each k."""
    recipe = tiny(RECIPES[name]) if args.tiny else RECIPES[name]
    row: dict = {"experiment": name, "model": recipe.model, "batch_size": recipe.batch_size,
                 "precision": args.together_precision, "seconds": args.together_seconds, "per_gpu": {}}
    for k in ks:
        start = time.perf_counter()
        figures = run_together(name, k, args, folder)
        figures["projected_seconds"] = makespan(RECIPES[name], k, figures["images_per_second"] / k)
        figures["benchmark_seconds"] = time.perf_counter() - start
        row["per_gpu"][str(k)] = figures
        print(f"{name} k={k}: {rate(figures['images_per_second'])} images/s per GPU "
              f"({', '.join(rate(v) for v in figures['per_process'])} per process, {figures['feed']} feed)",
              file=sys.stderr, flush=True)
        save(row)
    return row


def together_table(rows: list[dict]) -> str:
    """images/s per GPU at each k, against k = 1, and the experiment's training time on one GPU at that k."""
    lines = ["| experiment | model | batch | k | feed | images/s per process | images/s per GPU | x k=1 "
             "| projected on 1 GPU |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        one = r["per_gpu"].get("1", {}).get("images_per_second")
        for k, f in r["per_gpu"].items():
            ratio = "n/a" if one is None else f"{f['images_per_second'] / one:.2f}"
            lines.append(f"| {r['experiment']} | {r['model']} | {r['batch_size']} | {k} | {f['feed']} "
                         f"| {', '.join(rate(v) for v in f['per_process'])} | {rate(f['images_per_second'])} "
                         f"| {ratio} | {hours(f['projected_seconds'])} |")
    return "\n".join(lines)


def per_call_table(rows: list[dict]) -> str:
    """The train stage's feed one step per call against several (steps_per_execution), same run."""
    lines = ["| experiment | precision | feed | steps per call | images/s, 1 step per call | images/s, N per call "
             "| ratio |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        for precision, f in r.get("steps_per_execution", {}).items():
            lines.append(f"| {r['experiment']} | {precision} | {f['feed']} | {f['count']} | {rate(f['one'])} "
                         f"| {rate(f['many'])} | {f['many'] / f['one']:.2f} |")
    return "\n".join(lines)


def study_table(rows: list[dict], together_rows: list[dict]) -> str:
    """The reference studies' whole study on one GPU: per experiment at k = 1 and at its best measured k; the
    sum of each."""
    by_name = {r["experiment"]: r for r in together_rows}
    names = list(dict.fromkeys([*(r["experiment"] for r in rows), *by_name]))
    lines = ["| experiment | k = 1 | best k | at best k |", "|---|---|---|---|"]
    one_total, best_total, missing = 0.0, 0.0, []
    for name in names:
        options = {int(k): f["projected_seconds"] for k, f in by_name.get(name, {}).get("per_gpu", {}).items()}
        fitted = next((r for r in rows if r["experiment"] == name and "projected_seconds" in r), None)
        if 1 not in options and fitted is not None:
            options[1] = fitted["projected_seconds"]
        if not options:
            missing.append(name)
            continue
        best = min(options, key=options.__getitem__)
        one = options.get(1)
        one_total += one or 0.0
        best_total += options[best]
        lines.append(f"| {name} | {'n/a' if one is None else hours(one)} | {best} | {hours(options[best])} |")
    gaps = f" (without {', '.join(missing)})" if missing else ""
    lines.append(f"| all | {hours(one_total)}{gaps} | | {hours(best_total)}{gaps} |")
    return "\n".join(lines)


def rate(value: float) -> str:
    """images/s: whole numbers with thousands separators, three significant digits under 100 (CPU checks)."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def devices() -> str:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        found = jax.devices()
        return f"{len(found)} x {found[0].device_kind} ({found[0].platform})"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return f"{len(gpus)} GPU(s)" if gpus else "CPU"
    return backend


def cell(figures: dict[str, float] | None, feed: str) -> str:
    return rate(figures[feed]) if figures and feed in figures else "n/a"


def table(rows: list[dict]) -> str:
    """Training images/s per precision and feed; "n/a" where a run did not measure it (``--precisions``, or a
    run stopped by a time limit)."""
    lines = ["| experiment | model | input (HxW) | batch | float32 ceiling | float32 host | float32 device "
             "| mixed ceiling | mixed host | mixed device | stage feed / ceiling (mixed) | training images "
             "| projected on 1 GPU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mixed, f32 = (r["images_per_second"].get(p) for p in PRECISIONS)
        share = "n/a" if mixed is None or "ceiling" not in mixed or r["stage_feed"] not in mixed else \
            f"{mixed[r['stage_feed']] / mixed['ceiling']:.2f} ({r['stage_feed']})"
        projected = hours(r["projected_seconds"]) if "projected_seconds" in r else "n/a"
        lines.append(
            f"| {r['experiment']} | {r['model']} | {r['height']}x{r['width']} | {r['batch_size']} "
            f"| {cell(f32, 'ceiling')} | {cell(f32, 'host')} | {cell(f32, 'device')} | {cell(mixed, 'ceiling')} "
            f"| {cell(mixed, 'host')} | {cell(mixed, 'device')} | {share} | {r['training_images']:,} | {projected} |")
    total = hours(sum(r.get("projected_seconds", 0.0) for r in rows))
    missing = [r["experiment"] for r in rows if "projected_seconds" not in r]
    total += f" (without {', '.join(missing)})" if missing else ""
    lines.append(f"| all | | | | | | | | | | | {sum(r['training_images'] for r in rows):,} | {total} |")
    return "\n".join(lines)


def tenfold(fed: float | None, consumed: float | None) -> str:
    """What a feeder delivers over ten times what is consumed; n/a where either was not measured."""
    return "n/a" if fed is None or consumed is None else f"{fed / (10 * consumed):.1f}"


def feeder_table(rows: list[dict]) -> str:
    """The feeder alone against ten times what the GPU consumed (mixed ceiling) and an H100's assumed rate."""
    lines = ["| experiment | input, batch | GPU consumes (mixed ceiling) | assumed H100 (G MACs) | host feeder alone "
             "| device feeder alone | device / 10x consumed | device / 10x assumed H100 | device feed, own loop "
             "| device feeder, a batch a call |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mixed, alone = r["images_per_second"].get("mixed_float16"), r["feeder_alone"]
        consumed, assumed, device = (mixed or {}).get("ceiling"), r.get("assumed_h100"), alone.get("device")
        consumed_ratio, assumed_ratio = (tenfold(device, of) for of in (consumed, assumed))
        assumed_cell = "n/a" if assumed is None else f"{rate(assumed)} ({r['macs_per_image'] / 1e9:.2f})"
        lines.append(f"| {r['experiment']} | {r['height']}x{r['width']}, {r['batch_size']} | {cell(mixed, 'ceiling')} "
                     f"| {assumed_cell} | {cell(alone, 'host')} | {cell(alone, 'device')} | {consumed_ratio} "
                     f"| {assumed_ratio} | {cell(alone, 'device_own')} | {cell(alone, 'device_per_batch')} |")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", default=",".join(RECIPES),
                        help="comma-separated experiments (default: all): " + ", ".join(RECIPES))
    parser.add_argument("--steps", type=int, default=50, help="batches per timed epoch (default 50)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after the warm-up; the best counts")
    parser.add_argument("--alone-seconds", type=float, default=ALONE_SECONDS,
                        help=f"how long the feeder alone is timed per feed (default {ALONE_SECONDS:g})")
    parser.add_argument("--precisions", default=",".join(PRECISIONS),
                        help=f"comma-separated, measured in the order given after the feeders alone (default "
                             f"{','.join(PRECISIONS)}; mixed_float16 gives the GPU's consumption and the projection)")
    parser.add_argument("--feeds", default=",".join(FEEDS),
                        help=f"comma-separated feeds timed per precision (default {','.join(FEEDS)}); the train "
                             "stage's own feed is always timed, it makes the projection")
    parser.add_argument("--together", default="",
                        help="comma-separated experiments to time first as k training processes at once on the GPU "
                             "(params' gpu_runs_per_device), for each k of --per-gpu (default: none)")
    parser.add_argument("--per-gpu", default="1,2,4,8", help="the k values of --together (default 1,2,4,8)")
    parser.add_argument("--together-seconds", type=float, default=20.0,
                        help="seconds each process of --together is timed, all at once, after its warm-up epoch")
    parser.add_argument("--together-precision", default="mixed_float16", choices=PRECISIONS,
                        help="precision of --together (default mixed_float16, what the train stage sets on a GPU)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one process of --together (JSON spec)
    parser.add_argument("--tiny", action="store_true",
                        help=f"each model's smallest input, batch {TINY_BATCH}: checks the code on a CPU, "
                             "its figures and projections mean nothing")
    parser.add_argument("--json", type=Path, default=ROOT / "tmp" / "gpu_benchmark.json",
                        help="where the figures go (default: tmp/gpu_benchmark.json, which git ignores)")
    parser.add_argument("--tables", type=Path, nargs="+", metavar="JSON",
                        help="measure nothing: print the tables of figures saved by earlier runs (one or more "
                             "--json files, e.g. of runs cut short by a time limit), in the order given")
    args = parser.parse_args(argv)
    if args.worker:
        return args
    names = [n for n in args.experiments.split(",") if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown or not names:
        parser.error(f"--experiments {args.experiments!r}: unknown {', '.join(unknown) or '(none given)'}; "
                     f"accepted: {', '.join(RECIPES)}")
    args.together_names = [n for n in args.together.split(",") if n]
    unknown = [n for n in args.together_names if n not in RECIPES]
    if unknown:
        parser.error(f"--together {args.together!r}: unknown {', '.join(unknown)}; accepted: {', '.join(RECIPES)}")
    ks = args.per_gpu.split(",")
    if not all(k.strip().isdigit() and int(k) >= 1 for k in ks):
        parser.error(f"--per-gpu {args.per_gpu!r}: accepted: comma-separated whole numbers >= 1")
    args.ks = tuple(dict.fromkeys(int(k) for k in ks))
    feeds = [f for f in args.feeds.split(",") if f]
    if not feeds or any(f not in FEEDS for f in feeds):
        parser.error(f"--feeds {args.feeds!r}: accepted: any of {', '.join(FEEDS)}")
    args.feeds = tuple(feeds)
    if args.together_seconds <= 0:
        parser.error(f"--together-seconds {args.together_seconds:g}: accepted: seconds > 0")
    precisions = [p for p in args.precisions.split(",") if p]
    wrong = [p for p in precisions if p not in PRECISIONS] or [p for p in precisions if precisions.count(p) > 1]
    if wrong or not precisions:
        parser.error(f"--precisions {args.precisions!r}: {'bad ' + ', '.join(wrong) if wrong else 'none given'}; "
                     f"accepted: any of {', '.join(PRECISIONS)}, each once")
    args.precisions = tuple(precisions)
    if args.steps < 1 or args.epochs < 1 or args.alone_seconds < 0:
        parser.error(f"--steps {args.steps}, --epochs {args.epochs}, --alone-seconds {args.alone_seconds:g}: "
                     "accepted: steps and epochs >= 1, seconds >= 0 (0: no feeders alone)")
    args.names = names
    return args


def saved_tables(files: list[Path]) -> str:
    """The tables of earlier runs' figures: each run's machine line, then every experiment measured."""
    runs = [json.loads(f.read_text()) for f in files]
    rows = [row for run in runs for row in run["experiments"]]
    together_rows = [row for run in runs for row in run.get("together", [])]
    machines = "\n".join(dict.fromkeys(run["machine"] for run in runs))
    return f"{machines}\n\n{table(rows)}\n\n{feeder_table(rows)}{extra_tables(rows, together_rows)}"


def extra_tables(rows: list[dict], together_rows: list[dict]) -> str:
    """k processes per GPU, steps per call and the whole study's projection, where a run measured them."""
    out = ""
    if together_rows:
        out += f"\n\nk training processes at once on one GPU (gpu_runs_per_device):\n\n{together_table(together_rows)}"
    if any("steps_per_execution" in r for r in rows):
        out += f"\n\nSeveral training steps per call (steps_per_execution):\n\n{per_call_table(rows)}"
    if together_rows:
        out += "\n\nThe reference studies' whole study on one GPU, training alone, at k = 1 and at each " \
               f"experiment's best k:\n\n" \
               f"{study_table(rows, together_rows)}"
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return
    if args.tables:
        print(saved_tables(args.tables))
        return
    versions = [f"keras {keras.__version__}", f"backend {keras.backend.backend()}"]
    if keras.backend.backend() == "jax":
        import jax

        versions.append(f"jax {jax.__version__}")
    base = f"Machine: {platform.node() or 'unknown'}; {machine(*versions)}; devices: "
    # The k processes of --together run first, while this process has not started the backend: on JAX that start
    # would take 75% of the GPU's memory here, and theirs would not fit. They say which device they ran on.
    header = base + "(not started)"
    args.json.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    together_rows: list[dict] = []

    def write(experiments: list[dict], together_part: list[dict]) -> None:
        # Beside it, then renamed: a run stopped mid-write leaves the last whole file (transferbench.core.files'
        # own helper would import the params stack, which the GPU machine lacks).
        partial = args.json.with_name(args.json.name + ".partial")
        partial.write_text(json.dumps({"machine": header, "tiny": args.tiny, "steps": args.steps, "epochs": args.epochs,
                                       "precisions": list(args.precisions),
                                       "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                                       "experiments": experiments, "together": together_part}, indent=2) + "\n")
        partial.replace(args.json)

    def save(row: dict) -> None:  # after every part: a run stopped by a time limit keeps what it measured
        write([*(r for r in rows if r is not row), row], together_rows)

    def save_together(row: dict) -> None:
        nonlocal header
        header = base + next(iter(row["per_gpu"].values()))["devices"]
        write(rows, [*(r for r in together_rows if r is not row), row])

    with tempfile.TemporaryDirectory(prefix="gpu-benchmark-") as tmp:
        for name in args.together_names:  # first: the question of gpu_runs_per_device
            together_rows.append(together(name, args.ks, args, Path(tmp), save_together))
            save_together(together_rows[-1])
        if jax_backend():  # the models --together compiled, read back from its cache rather than compiled again
            import jax

            jax.config.update("jax_compilation_cache_dir", str(Path(tmp) / "jax-cache"))
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        header = base + devices()
        resnet50 = resnet50_macs()
        for name in args.names:
            recipe = tiny(RECIPES[name]) if args.tiny else RECIPES[name]
            start = time.perf_counter()
            row = measure(name, recipe, args.steps, args.epochs, Path(tmp), resnet50, args.alone_seconds,
                          args.precisions, save, args.feeds)
            row["benchmark_seconds"] = time.perf_counter() - start  # with compilation: for planning a run
            rows.append(row)
            save(row)
    note = (f"Steps per timed epoch {args.steps}, best of {args.epochs} timed epochs after a warm-up. "
            + ("TINY CHECK (--tiny): smallest inputs, batch 2; not a measurement of the recipes. " if args.tiny else "")
            + "Projection: training images x epochs x runs at the mixed-precision rate of the train stage's feed; "
              "leaves out downloads, generation, preparation, validation and test passes, compilation.")
    print(f"{header}\n\n{table(rows)}\n\n{note}\n\nThe feeder alone (images/s on the device, no model):\n\n"
          f"{feeder_table(rows)}{extra_tables(rows, together_rows)}")

if __name__ == "__main__":
    main()
