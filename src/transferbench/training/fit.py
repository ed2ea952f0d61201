"""Builds, compiles and trains an experiment's model; a killed run resumes from its last epoch.

Resume state lives in a work folder outside DVC's outputs (DVC deletes outputs before a stage
runs): each epoch's model with its optimizer state in a file of its own, and state.json, a record of
the epoch, the strategy phase (transferbench.models.strategies), history, callback counters and the
names of the last and the best model files. state.json is renamed into place last: it is the commit,
so a run killed at any moment resumes from the last epoch whose files were all complete.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
from tqdm import tqdm

from transferbench.config.experiment import Plateau, Schedule, Step
from transferbench.core import backend
from transferbench.core.files import read_json, write_json
from transferbench.core.progress import in_terminal
from transferbench.models import strategies
from transferbench.models.assembly import assemble_model, compile_outputs, make_optimizer
from transferbench.models.backbones import initial_core, load_model
from transferbench.models.catalog import MODELS, HeadOptions
from transferbench.models.heads import output_names
from transferbench.study.experiments import BALANCED_MONITOR, MONITOR, Experiment, monitor
from transferbench.training.batches import ArrayBatches, class_weights, device_resident, fit_input
from transferbench.training.distribution import Placement, active, portable
from transferbench.training.feed import feed_for

log = logging.getLogger(__name__)



def configure_precision() -> str:
    """Mixed precision on a GPU (tensor cores), float32 on CPU where float16 is slower; returns the policy."""
    policy = "mixed_float16" if backend.gpu_available() else "float32"
    keras.mixed_precision.set_dtype_policy(policy)
    return policy


def build_model(experiment: Experiment, weights_file: Path | None) -> keras.Model:
    """Base (initial weights loaded) + the experiment's head, its layers frozen for the first phase."""
    settings = experiment.settings
    core = initial_core(settings.model, experiment.image_shape, weights_file)
    model = assemble_model(settings.model, core, experiment.image_shape, experiment.task,
                           pooling=settings.pooling, head=settings.head, head_options=HeadOptions.of(settings),
                           augment=settings.augment, name=experiment.name)
    strategies.apply(model, strategies.phases(settings)[0])
    return model


def compile_model(model: keras.Model, experiment: Experiment, learning_rate: float | None = None,
                  steps_per_execution: int = 1) -> None:
    """Loss, loss weights and accuracy per output; ``learning_rate`` defaults to the experiment's;
    ``steps_per_execution``: training steps per call of the train function (:func:`steps_per_call`)."""
    settings = experiment.settings
    optimizer = make_optimizer(settings.optimizer,
                               settings.learning_rate if learning_rate is None else learning_rate)
    compile_outputs(model, settings.model, settings.head, experiment.task, optimizer,
                    balanced=monitor(settings) == BALANCED_MONITOR, steps_per_execution=steps_per_execution)


def steps_per_call(model: str, steps: int) -> int:
    """Training steps per call of the train function for ``model`` at ``steps`` an epoch (ModelEntry.steps_per_call),
    with a GPU; one on a CPU, where the step itself dwarfs Keras' work around it (the small CNN on the 2-core VM:
    0.76-1.06x on TensorFlow, within the load's noise; docs/benchmarks.md)."""
    return MODELS.get(model).steps_per_call(steps) if backend.gpu_available() else 1


def training_steps(images: int, batch_size: int, placement: Placement) -> int:
    """Steps of one training epoch: every batch on one device, the full batches only in data parallel
    (Placement.training)."""
    return images // batch_size if placement.parallel else math.ceil(images / batch_size)


def mean_accuracy(logs: dict, head_names: Sequence[str], prefix: str = "") -> float | None:
    """The mean of the task outputs' ``<prefix>accuracy`` in ``logs`` (one output logs ``accuracy`` itself,
    several ``<output>_accuracy``), or None when they are not all there."""
    keys = [f"{prefix}{name}_accuracy" for name in head_names]
    if all(k in logs for k in keys):
        return float(sum(float(logs[k]) for k in keys) / len(keys))
    return float(logs[f"{prefix}accuracy"]) if f"{prefix}accuracy" in logs else None


class EpochSummary(keras.callbacks.Callback):
    """Adds ``accuracy``/``val_accuracy`` over the task's outputs only, and the epoch's learning rate.

    With several task outputs (CAPTCHAs) it is their mean: the seed watched the first character
    only; with this, checkpoints and the schedule follow all six. Auxiliary outputs (GoogLeNet)
    are left out: the score is the main classifier's. It must come first among the callbacks,
    which all read the same logs dict.
    """

    def __init__(self, head_names: Sequence[str]):
        super().__init__()
        self.head_names = list(head_names)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for prefix in ("", "val_"):
            mean = mean_accuracy(logs, self.head_names, prefix)
            if mean is not None:
                logs[f"{prefix}accuracy"] = mean
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class EpochSeconds(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (training alone), ``validation_seconds`` and ``images_per_second`` to each
    epoch's logs: history, resumed runs and the line each epoch prints (EpochLine) carry time and speed.

    The validation pass is timed apart (fit calls on_test_begin / on_test_end around it), so time to
    accuracy and training speed count training, not the checks made on the way.
    """

    def __init__(self, images: int):
        super().__init__()
        self.images = images

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._validation = time.perf_counter(), 0.0

    def on_test_begin(self, logs=None):
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self._validation += time.perf_counter() - self._test_start

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["validation_seconds"] = self._validation
            logs["epoch_seconds"] = time.perf_counter() - self._start - self._validation
            logs["images_per_second"] = self.images / max(logs["epoch_seconds"], 1e-9)


def epoch_line(epoch: int, epochs: int, logs: dict) -> str:
    """One epoch in one line: what Keras prints lists every output's loss and accuracy (25 metrics for a
    CAPTCHA's six heads, ~640 characters) and wraps. The accuracies are the means over the task's
    outputs (EpochSummary); ``epoch`` counts from 1.

        epoch 3/20: loss 2.31 (val 2.405), accuracy 0.412 (val 0.398), lr 0.001, 812 img/s, 39.4 s + 2.1 s validation
    """
    parts = []
    for name, spec in (("loss", ".4g"), ("accuracy", ".3f")):
        if name in logs:
            validation = f" (val {float(logs[f'val_{name}']):{spec}})" if f"val_{name}" in logs else ""
            parts.append(f"{name} {float(logs[name]):{spec}}{validation}")
    if "learning_rate" in logs:
        parts.append(f"lr {float(logs['learning_rate']):.3g}")
    if "images_per_second" in logs:
        parts.append(f"{float(logs['images_per_second']):,.0f} img/s")
    if "epoch_seconds" in logs:
        parts.append(f"{float(logs['epoch_seconds']):.1f} s + {float(logs.get('validation_seconds', 0.0)):.1f} s "
                     "validation")
    return f"epoch {epoch}/{epochs}: " + ", ".join(parts)


class EpochLine(keras.callbacks.Callback):
    """What training shows instead of Keras' progress output: :func:`epoch_line` at each epoch's end, a log
    line. In a terminal (``terminal``, default: when stderr is one) a bar of the epoch's batches with its
    rate, time left and running loss and accuracy is redrawn in place until then. Comes after EpochSummary
    and EpochSeconds, whose values it shows."""

    # Only reads the batch logs: Keras may call it from its thread pool, keeping batch dispatch asynchronous.
    async_safe = True

    def __init__(self, epochs: int, head_names: Sequence[str], terminal: bool | None = None):
        super().__init__()
        self.epochs, self.head_names = epochs, list(head_names)
        self.terminal = in_terminal() if terminal is None else terminal
        self.bar: tqdm | None = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.terminal:
            self.bar = tqdm(total=(self.params or {}).get("steps"), desc=f"epoch {epoch + 1}/{self.epochs}",
                            unit="batch", leave=False, file=sys.stderr, mininterval=1.0, dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is None:
            return
        shown = {"loss": float(logs["loss"])} if logs and "loss" in logs else {}
        accuracy = mean_accuracy(logs or {}, self.head_names)
        if accuracy is not None:
            shown["accuracy"] = accuracy
        self.bar.set_postfix_str(", ".join(f"{k} {v:.3f}" for k, v in shown.items()), refresh=False)
        # ``batch`` is the last step done: Keras calls this once per execution of several steps (steps_per_execution).
        self.bar.update(batch + 1 - self.bar.n)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        log.info("%s", epoch_line(epoch + 1, self.epochs, logs or {}))

    def on_train_end(self, logs=None):
        if self.bar is not None:  # stopped within an epoch
            self.bar.close()
            self.bar = None


def schedule_callbacks(schedule: Schedule, phase: strategies.Phase) -> list[keras.callbacks.Callback]:
    """The experiment's learning-rate schedule for one phase (a phase starts at its own rate)."""
    if isinstance(schedule, Plateau):
        mode = "min" if schedule.monitor.endswith("loss") else "max"
        return [keras.callbacks.ReduceLROnPlateau(monitor=schedule.monitor, mode=mode, factor=schedule.factor,
                                                  patience=schedule.patience, min_lr=schedule.min_lr,
                                                  verbose=1)]
    if isinstance(schedule, Step):
        factor, every, start, rate = schedule.factor, schedule.every, phase.start, phase.learning_rate
        return [keras.callbacks.LearningRateScheduler(
            lambda epoch, lr: step_rate(rate, factor, every, epoch - start))]
    return []


def step_rate(rate: float, factor: float, every: int, epoch: int) -> float:
    """Reference study 004's step decay: epoch index ``epoch`` (from 0) trains at
    rate * factor ** floor((epoch + 1) / every)."""
    return float(rate * factor ** ((epoch + 1) // every))


@dataclass
class Best:
    """The best validation score so far and the work folder's file holding that model."""

    score: float = -math.inf
    file: str | None = None


class ResumeState(keras.callbacks.Callback):
    """Commits every epoch so a killed run can carry on; runs last, after the schedule."""

    def __init__(self, work_dir: Path, best: Best, plateau: keras.callbacks.ReduceLROnPlateau | None,
                 history: list[dict], phase: str = "train", monitor: str = MONITOR):
        super().__init__()
        self.work_dir, self.best, self.plateau, self.history = work_dir, best, plateau, history
        self.phase, self.monitor = phase, monitor
        self.restored: dict | None = None

    def restore(self, state: dict) -> None:
        """Counters to put back once training begins (ReduceLROnPlateau resets its own then)."""
        self.restored = state

    def on_train_begin(self, logs=None):
        if self.restored is None or self.restored.get("phase", "train") != self.phase:
            return  # a new phase starts with its own rate and a fresh schedule
        if self.plateau is not None and self.restored.get("plateau"):
            for key, value in self.restored["plateau"].items():
                setattr(self.plateau, key, value)
        self.model.optimizer.learning_rate.assign(self.restored["learning_rate"])

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        self.history.append(row)
        # A new name each epoch: the files the committed state names are never overwritten.
        last = f"epoch-{epoch + 1:04d}.keras"
        save_model(self.model, self.work_dir / last)
        score = (logs or {}).get(self.monitor)
        best = Best(float(score), last) if score is not None and float(score) > self.best.score else self.best
        plateau = None if self.plateau is None else {
            "best": float(self.plateau.best), "wait": int(self.plateau.wait),
            "cooldown_counter": int(self.plateau.cooldown_counter)}
        write_json(self.work_dir / "state.json", {
            "epoch": epoch + 1,
            "phase": self.phase,  # the phase the last model is frozen and compiled for
            "history": self.history,
            "last": last,
            "best": best.file,
            "checkpoint_best": best.score,
            "plateau": plateau,
            "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
        })
        self.best.score, self.best.file = best.score, best.file
        for path in self.work_dir.iterdir():  # models the state no longer names, and cut-off writes
            if path.suffix == ".keras" and path.name not in (last, best.file):
                path.unlink()


def last_model(work_dir: Path, state: dict) -> Path:
    # Work folders from before per-epoch files hold last.keras / best.keras.
    return work_dir / state.get("last", "last.keras")


def best_model(work_dir: Path) -> Path:
    """The best model of the run committed in ``work_dir`` (resumable: it keeps its optimizer state)."""
    return work_dir / (read_json(work_dir / "state.json").get("best") or "best.keras")


def save_model(model: keras.Model, path: Path) -> None:
    """model.save, atomically (Keras insists on the .keras suffix, so the temporary name keeps it)."""
    tmp = path.with_name(f".{path.stem}.partial.keras")
    model.save(tmp)
    tmp.replace(path)


def fit(experiment: Experiment, weights_file: Path | None, train: ArrayBatches, validation: ArrayBatches,
        work_dir: Path, extra_callbacks: Sequence[keras.callbacks.Callback] = (),
        verbose: int | None = None, placement: Placement | None = None) -> list[dict]:
    """Train (or resume) into ``work_dir``; return the per-epoch history. The best model of the last phase:
    best_model(work_dir).

    Each strategy phase is one ``model.fit``; between phases the layers are re-frozen and the model
    recompiled at the next phase's rate. A run killed in any phase resumes in that phase. ``placement``
    (default: the process's, transferbench.training.distribution) says on which devices.
    """
    placement = placement or active()
    # Building, compiling, loading and training all in the strategy's scope (TensorFlow data parallel).
    with placement.scope():
        return _fit(experiment, weights_file, train, validation, work_dir, extra_callbacks, verbose, placement)


def _fit(experiment: Experiment, weights_file: Path | None, train: ArrayBatches, validation: ArrayBatches,
         work_dir: Path, extra_callbacks: Sequence[keras.callbacks.Callback], verbose: int | None,
         placement: Placement) -> list[dict]:
    plan = strategies.phases(experiment.settings)
    per_call = steps_per_call(experiment.settings.model, training_steps(len(train.images), train.batch_size,
                                                                        placement))
    work_dir.mkdir(parents=True, exist_ok=True)
    state_file = work_dir / "state.json"
    state = read_json(state_file) if state_file.exists() else None
    if state is not None:
        model = placement.prepare(load_model(last_model(work_dir, state)))
        current = state.get("phase", plan[0].name)
        log.info("resuming %s after epoch %s (%s) from %s", experiment.name, state["epoch"], current, work_dir)
    else:
        keras.utils.set_random_seed(experiment.seed)
        model = placement.prepare(build_model(experiment, weights_file))
        compile_model(model, experiment, plan[0].learning_rate, per_call)
        current = plan[0].name
    history: list[dict] = list(state["history"]) if state else []
    epoch = state["epoch"] if state else 0
    # The best model of the phase the state was saved in; a new phase starts a new best (below).
    best = Best(state["checkpoint_best"], best_model(work_dir).name) if state else Best()
    if verbose is None:
        verbose = 1 if in_terminal() else 2  # a live bar in a terminal, then a line per epoch; only lines in logs
    pipeline = backend.gpu_available()
    # Classes weighed in the feed, once (ArrayBatches.weighted), not by Keras for every batch: on JAX with a
    # GPU the training arrays, weights included, are copied there once and batches gathered on it (batches.py).
    train = train.weighted(class_weights(experiment.settings.class_weight, train.targets, experiment.task.n_classes))
    source = device_resident(train, placement.count)
    for phase in plan:
        if epoch >= phase.end:
            continue
        if phase.name != current:
            # The run's model comes from its last phase: a two-phase run's fine-tuned arm is scored on a
            # fine-tuned checkpoint, never on one from its frozen phase that happened to validate better.
            best.score, best.file = -math.inf, None
            strategies.apply(model, phase)
            compile_model(model, experiment, phase.learning_rate, per_call)  # a fresh optimizer at the phase's rate
            current = phase.name
            log.info("%s: phase %s from epoch %d, learning rate %s", experiment.name, phase.name, epoch + 1,
                     phase.learning_rate)
        elif strategies.apply(model, phase):
            # A saved model comes back with its trainable flags; should they differ, the optimizer must follow.
            compile_model(model, experiment, phase.learning_rate, per_call)
        schedule = schedule_callbacks(experiment.settings.schedule, phase)
        plateau = next((c for c in schedule if isinstance(c, keras.callbacks.ReduceLROnPlateau)), None)
        resume = ResumeState(work_dir, best, plateau, history, phase=phase.name, monitor=monitor(experiment.settings))
        if state is not None:
            resume.restore(state)  # once: a later phase starts its schedule fresh
            state = None
        task = experiment.task
        # In data parallel: full training batches only, validation padded to what the devices split.
        train_feed = placement.training(feed_for(model, source, task), len(train.images), train.batch_size)
        validation_feed, exact = placement.validation(feed_for(model, validation, task), len(validation.images),
                                                      validation.batch_size)
        # Keras' own output is off: it lists every output's metrics, one line wrapping over several (EpochLine).
        shown = [EpochLine(plan[-1].end, output_names(task), terminal=verbose == 1)] if verbose else []
        callbacks = [*exact, EpochSummary(output_names(task)), EpochSeconds(len(train.images)), *schedule,
                     *extra_callbacks, *shown, resume]
        train.set_epoch(epoch)
        # shuffle=False: the batches shuffle themselves from (seed, epoch). Keras' own shuffle would also
        # reorder them with Python's `random`, seeded only on a fresh run, so a resumed run saw other batches.
        # With a GPU, TensorFlow reads a tf.data pipeline gathering on several threads (fit_input): the
        # same batches as the PyDataset, in the same order. On a CPU the model is slower than the feeder
        # by 100x or more, and the pipeline's threads would only compete with it (docs/benchmarks.md).
        # Keras advances a PyDataset once before the first epoch (EpochIterator.reset calls its
        # on_epoch_end), so fit's epoch e reads the batches' epoch e + 1; the pipeline reads the same.
        x, steps = fit_input(train_feed, initial_epoch=epoch + 1, epochs=phase.end + 1, pipeline=pipeline)
        model.fit(x, steps_per_epoch=steps, validation_data=fit_input(validation_feed, pipeline=pipeline)[0],
                  epochs=phase.end, initial_epoch=epoch, callbacks=callbacks, verbose=0, shuffle=False)
        epoch = phase.end
    return history


def finish(work_dir: Path, model_path: Path) -> None:
    """Put the best model in place without its optimizer state (a third of the size), drop the resume state."""
    model_path.parent.mkdir(parents=True, exist_ok=True)
    save_model(portable(load_model(best_model(work_dir), compile=False)), model_path)
    shutil.rmtree(work_dir)
