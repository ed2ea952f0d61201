"""Builds, compiles and trains an experiment's model; a killed run resumes from its last epoch.

Resume state lives in a work folder outside DVC's outputs (DVC deletes outputs before a stage
runs): the last model with its optimizer state, the best model so far, and a JSON record of the
epoch, history and callback counters, all written atomically at the end of every epoch.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Sequence

import keras

from stages.experiments import Experiment
from stages.feed import ArrayBatches
from stages.heads import HEADS
from stages.io import read_json, write_json
from stages.models import create_base

MONITOR = "val_accuracy"  # for multi-head tasks: the mean over heads (EpochSummary adds it)


def gpu_available() -> bool:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def configure_precision() -> str:
    """Mixed precision on a GPU (tensor cores), float32 on CPU where float16 is slower; returns the policy."""
    policy = "mixed_float16" if gpu_available() else "float32"
    keras.mixed_precision.set_dtype_policy(policy)
    return policy


def build_model(experiment: Experiment, weights_file: Path | None) -> keras.Model:
    """Base (preprocessing + core, initial weights loaded) + the experiment's head."""
    values = experiment.values
    base = create_base(values["model"], experiment.image_shape, values["pooling"], weights_file)
    outputs = HEADS.get(values["head"]).build(base.output, experiment.task)
    return keras.Model(base.input, outputs if len(outputs) > 1 else outputs[0], name=experiment.name)


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    return keras.optimizers.SGD(learning_rate, momentum=0.9)


def compile_model(model: keras.Model, experiment: Experiment) -> None:
    values, task = experiment.values, experiment.task
    loss = HEADS.get(values["head"]).loss(task)
    if task.n_outputs > 1:
        names = model.output_names
        model.compile(optimizer=make_optimizer(values["optimizer"], values["learning_rate"]),
                      loss={n: loss for n in names}, metrics={n: ["accuracy"] for n in names})
    else:
        model.compile(optimizer=make_optimizer(values["optimizer"], values["learning_rate"]),
                      loss=loss, metrics=["accuracy"])


class EpochSummary(keras.callbacks.Callback):
    """Adds ``accuracy``/``val_accuracy`` as the mean over heads, and the epoch's learning rate.

    The seed watched the first CAPTCHA character only; with this, checkpoints and the schedule
    follow all six. It must come first among the callbacks, which all read the same logs dict.
    """

    def __init__(self, head_names: Sequence[str]):
        super().__init__()
        self.head_names = list(head_names)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if len(self.head_names) > 1:
            for prefix in ("", "val_"):
                keys = [f"{prefix}{name}_accuracy" for name in self.head_names]
                if all(k in logs for k in keys):
                    logs[f"{prefix}accuracy"] = float(sum(logs[k] for k in keys) / len(keys))
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class ResumeState(keras.callbacks.Callback):
    """Saves everything a killed run needs to carry on; runs last, after the checkpoint callback."""

    def __init__(self, work_dir: Path, checkpoint: keras.callbacks.ModelCheckpoint,
                 plateau: keras.callbacks.ReduceLROnPlateau, history: list[dict]):
        super().__init__()
        self.work_dir, self.checkpoint, self.plateau, self.history = work_dir, checkpoint, plateau, history

        self.restored: dict | None = None

    def restore(self, state: dict) -> None:
        """Counters to put back once training begins (ReduceLROnPlateau resets its own then)."""
        self.restored = state

    def on_train_begin(self, logs=None):
        if self.restored is None:
            return
        self.checkpoint.best = self.restored["checkpoint_best"]
        for key, value in self.restored["plateau"].items():
            setattr(self.plateau, key, value)
        self.model.optimizer.learning_rate.assign(self.restored["learning_rate"])

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        self.history.append(row)
        save_model(self.model, self.work_dir / "last.keras")
        # The state file is written last: it is what says "epoch N is complete".
        write_json(self.work_dir / "state.json", {
            "epoch": epoch + 1,
            "history": self.history,
            "checkpoint_best": float(self.checkpoint.best),
            "plateau": {"best": float(self.plateau.best), "wait": int(self.plateau.wait),
                        "cooldown_counter": int(self.plateau.cooldown_counter)},
            "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
        })


def save_model(model: keras.Model, path: Path) -> None:
    """model.save, atomically (Keras insists on the .keras suffix, so the temporary name keeps it)."""
    tmp = path.with_name(f".{path.stem}.partial.keras")
    model.save(tmp)
    tmp.replace(path)


def fit(experiment: Experiment, weights_file: Path | None, train: ArrayBatches, validation: ArrayBatches,
        work_dir: Path, extra_callbacks: Sequence[keras.callbacks.Callback] = (),
        verbose: int | None = None) -> list[dict]:
    """Train (or resume) into ``work_dir``; return the per-epoch history. The best model is best.keras."""
    values = experiment.values
    work_dir.mkdir(parents=True, exist_ok=True)
    state_file = work_dir / "state.json"
    state = read_json(state_file) if state_file.exists() else None
    if state is not None:
        model = keras.saving.load_model(work_dir / "last.keras")
        print(f"resuming {experiment.name} after epoch {state['epoch']} from {work_dir}", file=sys.stderr)
    else:
        keras.utils.set_random_seed(experiment.seed)
        model = build_model(experiment, weights_file)
        compile_model(model, experiment)
    history: list[dict] = list(state["history"]) if state else []
    initial_epoch = state["epoch"] if state else 0
    train.set_epoch(initial_epoch)

    reduce = values["reduce_lr"]
    plateau = keras.callbacks.ReduceLROnPlateau(monitor=MONITOR, mode="max", factor=reduce["factor"],
                                                patience=reduce["patience"], min_lr=reduce["min_lr"],
                                                verbose=1)
    checkpoint = keras.callbacks.ModelCheckpoint(str(work_dir / "best.keras"), monitor=MONITOR,
                                                 mode="max", save_best_only=True)
    resume = ResumeState(work_dir, checkpoint, plateau, history)
    if state:
        resume.restore(state)
    callbacks = [EpochSummary(model.output_names), plateau, checkpoint, *extra_callbacks, resume]
    if initial_epoch < values["epochs"]:
        if verbose is None:
            verbose = 1 if sys.stdout.isatty() else 2  # one line per epoch in logs, a live bar in a terminal
        model.fit(train, validation_data=validation, epochs=values["epochs"], initial_epoch=initial_epoch,
                  callbacks=callbacks, verbose=verbose)
    return history


def finish(work_dir: Path, model_path: Path) -> None:
    """Put the best model in place without its optimizer state (a third of the size), drop the resume state."""
    model_path.parent.mkdir(parents=True, exist_ok=True)
    save_model(keras.saving.load_model(work_dir / "best.keras", compile=False), model_path)
    shutil.rmtree(work_dir)
