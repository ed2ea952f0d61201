"""Training throughput of an experiment's model on this machine: images per second, per epoch.

    .venv/bin/python benchmarks/training.py --experiment captcha --images 320 --repeat 2

Three ways to feed the same model the same images, timed over whole epochs after a warm-up epoch
(the first epoch traces and compiles the train step):

- baseline: ``model.fit(x, y)`` on arrays held in memory (Keras' own NumPy adapter);
- pydataset: ``transferbench.training.batches.ArrayBatches`` over a memory-mapped ``images.npy``,
  shuffled per epoch, handed to ``fit`` as a ``PyDataset`` (how the train stage fed it before
  ``fit_input``);
- ours: the same batches through ``fit_input``: on TensorFlow the ``tf.data`` pipeline gathering on
  several threads, which the train stage uses with a GPU (on a CPU it keeps the ``PyDataset``, as these
  figures advise); on JAX the ``PyDataset`` itself.

Equal figures mean the feeder costs nothing next to the model; the train stage cannot be faster.
The methods take turns for ``--repeat`` rounds and each keeps its best epoch.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.gpu import EpochTimer  # noqa: E402
from transferbench.study.experiments import resolve  # noqa: E402
from transferbench.study.params import load_params  # noqa: E402
from transferbench.training.batches import ArrayBatches, fit_input  # noqa: E402
from transferbench.training.fit import build_model, compile_model, configure_precision  # noqa: E402


def make_data(experiment, n: int, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Random images of the experiment's shape in an .npy file, and random targets of its task."""
    rng = np.random.default_rng(0)
    path = folder / "images.npy"
    np.save(path, rng.integers(0, 256, (n, *experiment.image_shape), dtype=np.uint8))
    task = experiment.task
    shape = (n, task.n_outputs) if task.n_outputs > 1 else (n,)
    targets = rng.integers(0, 2 if task.kind == "binary" else task.n_classes, shape)
    return np.load(path, mmap_mode="r"), targets


def one_round(experiment, method: str, images: np.ndarray, targets: np.ndarray) -> float:
    """Seconds of the second epoch (the first compiles) for a fresh model fed by ``method``."""
    keras.utils.set_random_seed(0)
    model = build_model(experiment, None)
    compile_model(model, experiment)
    batch, task = experiment.settings.batch_size, experiment.task
    timer = EpochTimer()
    if method == "baseline":
        if len(model.output_names) != task.n_outputs:
            raise SystemExit(f"{experiment.name}: {experiment.settings.model} has auxiliary outputs; "
                             "the in-memory baseline feeds the task's targets only: pick another experiment")
        x = np.array(images)  # the whole split in memory, as the reference studies' generators effectively had
        y = [targets[:, i] for i in range(task.n_outputs)] if task.n_outputs > 1 else targets
        model.fit(x, tuple(y) if isinstance(y, list) else y, batch_size=batch, epochs=2, shuffle=True,
                  callbacks=[timer], verbose=0)
    else:
        feed = ArrayBatches(images, targets, batch, n_outputs=task.n_outputs, shuffle=True, seed=0)
        x, steps = (feed, None) if method == "pydataset" else fit_input(feed, initial_epoch=0, epochs=2)
        model.fit(x, steps_per_epoch=steps, epochs=2, callbacks=[timer], verbose=0, shuffle=False)
    keras.backend.clear_session()
    return timer.seconds[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="captcha")
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    experiment = resolve(load_params(), args.experiment)
    policy = configure_precision()
    print(f"{experiment.name}: {experiment.settings.model} at {experiment.image_shape}, batch "
          f"{experiment.settings.batch_size}, {args.images} images/epoch, backend {keras.backend.backend()}, "
          f"{policy}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        images, targets = make_data(experiment, args.images, Path(tmp))
        rounds: dict[str, list[float]] = {"baseline": [], "pydataset": [], "ours": []}
        for index in range(args.repeat):
            for method in rounds:
                rounds[method].append(one_round(experiment, method, images, targets))
            # Each round as it ends: a run cut short on a loaded machine still leaves its figures.
            print(f"round {index + 1}: " + ", ".join(f"{m} {r[-1]:.2f} s" for m, r in rounds.items()), flush=True)
    base = args.images / min(rounds["baseline"])
    print("\n| feeding | best epoch s | images/s | vs baseline | epoch s of each round |")
    print("|---|---:|---:|---:|---|")
    for method, label in (("baseline", "in-memory NumPy, `model.fit(x, y)`"),
                          ("pydataset", "memory-mapped `ArrayBatches` as a `PyDataset`"),
                          ("ours", "the same through `fit_input`'s `tf.data` pipeline")):
        best = min(rounds[method])
        print(f"| {label} | {best:.2f} | {args.images / best:.1f} | {args.images / best / base:.2f}x | "
              f"{' '.join(f'{s:.2f}' for s in rounds[method])} |")


if __name__ == "__main__":
    main()
