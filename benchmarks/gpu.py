"""One-shot GPU benchmark: training images/s of every experiment's model at the seeds' shapes and batches.

    KERAS_BACKEND=jax PYTHONPATH=src python benchmarks/gpu.py                  # on a GPU machine
    KERAS_BACKEND=jax PYTHONPATH=src python benchmarks/gpu.py --tiny --steps 2 --experiments cats_and_dogs_filtered_cnn

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
wall time of the seeds' ``dvc repro`` on one GPU: training images x epochs x runs (arms x seeds, and
the tuning trials: arms x factors x their share of the epochs) / images per second, per experiment.
It leaves out data download, CAPTCHA generation, preparation and validation, weight downloads,
validation and test passes, model compilation, and that fixed-feature arms (frozen base) train faster
than a whole model: a figure for the training work alone, at the whole model's rate.

Prints two markdown tables and writes the figures to ``--json`` (default ``tmp/gpu_benchmark.json``) after
each part of each experiment, so a run stopped by a time limit keeps what it measured; a figure not
measured reads "n/a".
``RECIPES`` is the seeds' recipe as params.yaml sets it (tests/unit/test_gpu_benchmark.py keeps them equal).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
from transferbench.training.batches import ArrayBatches, DeviceBatches, class_weights, fit_input  # noqa: E402
from transferbench.training.feed import feed_for  # noqa: E402

# mixed_float16: what the train stage sets on a GPU. In this order by default: the figures the feeder's target
# and the projection need come first, so a run on a time limit keeps them.
PRECISIONS = ("mixed_float16", "float32")
FEEDS = ("ceiling", "host", "device")
ALONE_SECONDS = 1.0  # the feeder alone: whole epochs until at least this long, after a warm-up epoch


@dataclass(frozen=True)
class Recipe:
    """What one experiment trains at the seeds' scale (params.yaml) and how many times (arms x seeds)."""

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
    train_images: int  # the seeds' training split (pets: seed 000's counts; ours may differ a little)
    runs: int  # arms x seeds: every run trains the whole recipe
    class_weight: str = "none"  # balanced: each batch carries sample weights, as the train stage feeds them
    # params' tuning grid in whole runs: arms x factors x the share of the epochs each trial trains
    tuning_runs: float = 0.0

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)


RECIPES: dict[str, Recipe] = {
    "pets": Recipe("xception", 100, 100, Task("multiclass", 3), "max", "dense", 0, 0.0, "flip", "adam", 0.001,
                   16, 30, 248_468, 9, "balanced", 2.25),
    "captcha": Recipe("xception", 80, 160, Task("multihead", 36, 6), "max", "dense", 0, 0.0, "none", "adam", 0.001,
                      16, 30, 200_000, 9, tuning_runs=2.25),
    "dogs_vs_cats": Recipe("vgg16", 224, 224, Task("binary", 2), "flatten", "dense", 256, 0.6, "none", "sgd", 0.0001,
                           25, 50, 2_000, 9, tuning_runs=2.25),
    "cats_and_dogs_filtered_cnn": Recipe("cnn", 150, 150, Task("binary", 2), "flatten", "dense", 512, 0.0, "none",
                                         "rmsprop", 0.001, 20, 15, 2_000, 3, tuning_runs=0.75),
    "cats_and_dogs_filtered": Recipe("xception", 150, 150, Task("binary", 2), "avg", "dense", 0, 0.2, "flip", "adam",
                                     0.001, 20, 15, 2_000, 9, tuning_runs=2.25),
    "cifar10": Recipe("googlenet", 224, 224, Task("multiclass", 10), "avg", "dense", 0, 0.4, "none", "sgd", 0.01,
                      256, 25, 45_000, 3, tuning_runs=0.75),
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


def build(recipe: Recipe, precision: str) -> keras.Model:
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        options = HeadOptions(units=recipe.head_units, dropout=recipe.head_dropout)
        model = assemble_model(recipe.model, build_core(recipe.model, recipe.shape), recipe.shape, recipe.task,
                               pooling=recipe.pooling, head=recipe.head, head_options=options,
                               augment=recipe.augment)
        compile_outputs(model, recipe.model, recipe.head, recipe.task,
                        make_optimizer(recipe.optimizer, recipe.learning_rate))
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


def fed(model: keras.Model, batches: ArrayBatches, recipe: Recipe, steps: int, epochs: int) -> dict[str, float]:
    """images/s of ``model.fit`` on each feed. Same shapes and dtypes for all, so they share the compiled step."""
    batch = recipe.batch_size
    host = feed_for(model, batches, recipe.task)
    figures = {"ceiling": images_per_second(model, on_device(host), steps, batch, epochs)}
    x, per_epoch = fit_input(host, initial_epoch=0, epochs=1 + epochs)  # tf.data on TensorFlow, as with a GPU
    figures["host"] = images_per_second(model, x, per_epoch, batch, epochs)
    if jax_backend():
        figures["device"] = images_per_second(model, feed_for(model, DeviceBatches(batches), recipe.task), None,
                                              batch, epochs)
    return figures


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
            alone_seconds: float, precisions: tuple[str, ...], save: Callable[[dict], None]) -> dict:
    """images/s of one experiment's feeders alone, then of its model per precision and feed, in that order: the
    row so far goes to ``save`` after each part, so a run stopped by a time limit keeps what it measured."""
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
           "feeder_alone": feeder_alone(batches(), alone_seconds), "training_images": work}
    print(f"{name} feeder alone: " + ", ".join(f"{k} {rate(v)} images/s" for k, v in row["feeder_alone"].items()),
          file=sys.stderr, flush=True)
    save(row)
    for precision in precisions:
        model = build(recipe, precision)
        if "macs_per_image" not in row:
            row["macs_per_image"] = macs = macs_per_image(model)
            row["assumed_h100"] = A100_RESNET50 * H100_OVER_A100 * resnet50 / macs
        figures[precision] = fed(model, batches(), recipe, steps, epochs)
        print(f"{name} {precision}: " + ", ".join(f"{k} {rate(v)} images/s" for k, v in figures[precision].items()),
              file=sys.stderr, flush=True)
        if precision == "mixed_float16":
            row["projected_seconds"] = work / figures[precision][stage_feed()]
        save(row)
        del model
        keras.backend.clear_session()
    (folder / "images.npy").unlink()
    return row


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
        share = "n/a" if mixed is None else f"{mixed[r['stage_feed']] / mixed['ceiling']:.2f} ({r['stage_feed']})"
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
    parser.add_argument("--tiny", action="store_true",
                        help=f"each model's smallest input, batch {TINY_BATCH}: checks the code on a CPU, "
                             "its figures and projections mean nothing")
    parser.add_argument("--json", type=Path, default=ROOT / "tmp" / "gpu_benchmark.json",
                        help="where the figures go (default: tmp/gpu_benchmark.json, which git ignores)")
    parser.add_argument("--tables", type=Path, nargs="+", metavar="JSON",
                        help="measure nothing: print the tables of figures saved by earlier runs (one or more "
                             "--json files, e.g. of runs cut short by a time limit), in the order given")
    args = parser.parse_args(argv)
    names = [n for n in args.experiments.split(",") if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown or not names:
        parser.error(f"--experiments {args.experiments!r}: unknown {', '.join(unknown) or '(none given)'}; "
                     f"accepted: {', '.join(RECIPES)}")
    precisions = [p for p in args.precisions.split(",") if p]
    wrong = [p for p in precisions if p not in PRECISIONS] or [p for p in precisions if precisions.count(p) > 1]
    if wrong or not precisions:
        parser.error(f"--precisions {args.precisions!r}: {'bad ' + ', '.join(wrong) if wrong else 'none given'}; "
                     f"accepted: any of {', '.join(PRECISIONS)}, each once")
    args.precisions = tuple(precisions)
    if args.steps < 1 or args.epochs < 1 or args.alone_seconds < 0:
        parser.error(f"--steps {args.steps}, --epochs {args.epochs}, --alone-seconds {args.alone_seconds:g}: "
                     "accepted: steps and epochs >= 1, seconds >= 0")
    args.names = names
    return args


def saved_tables(files: list[Path]) -> str:
    """The tables of earlier runs' figures: each run's machine line, then every experiment measured."""
    runs = [json.loads(f.read_text()) for f in files]
    rows = [row for run in runs for row in run["experiments"]]
    machines = "\n".join(dict.fromkeys(run["machine"] for run in runs))
    return f"{machines}\n\n{table(rows)}\n\n{feeder_table(rows)}"


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.tables:
        print(saved_tables(args.tables))
        return
    versions = [f"keras {keras.__version__}", f"backend {keras.backend.backend()}"]
    if keras.backend.backend() == "jax":
        import jax

        versions.append(f"jax {jax.__version__}")
    header = f"Machine: {platform.node() or 'unknown'}; {machine(*versions)}; devices: {devices()}"
    args.json.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    resnet50 = resnet50_macs()

    def save(row: dict) -> None:  # after every part: a run stopped by a time limit keeps what it measured
        done = [r for r in rows if r is not row]
        # Beside it, then renamed: a run stopped mid-write leaves the last whole file (transferbench.core.files'
        # own helper would import the params stack, which the GPU machine lacks).
        partial = args.json.with_name(args.json.name + ".partial")
        partial.write_text(json.dumps({"machine": header, "tiny": args.tiny, "steps": args.steps, "epochs": args.epochs,
                                       "precisions": list(args.precisions),
                                       "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                                       "experiments": [*done, row]}, indent=2) + "\n")
        partial.replace(args.json)

    with tempfile.TemporaryDirectory(prefix="gpu-benchmark-") as tmp:
        for name in args.names:
            recipe = tiny(RECIPES[name]) if args.tiny else RECIPES[name]
            start = time.perf_counter()
            row = measure(name, recipe, args.steps, args.epochs, Path(tmp), resnet50, args.alone_seconds,
                          args.precisions, save)
            row["benchmark_seconds"] = time.perf_counter() - start  # with compilation: for planning a run
            rows.append(row)
            save(row)
    note = (f"Steps per timed epoch {args.steps}, best of {args.epochs} timed epochs after a warm-up. "
            + ("TINY CHECK (--tiny): smallest inputs, batch 2; not a measurement of the recipes. " if args.tiny else "")
            + "Projection: training images x epochs x runs at the mixed-precision rate of the train stage's feed; "
              "leaves out downloads, generation, preparation, validation and test passes, compilation.")
    print(f"{header}\n\n{table(rows)}\n\n{note}\n\nThe feeder alone (images/s on the device, no model):\n\n"
          f"{feeder_table(rows)}")

if __name__ == "__main__":
    main()
