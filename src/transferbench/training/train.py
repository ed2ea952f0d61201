"""Stage `train@<experiment>`: train every run of the experiment (arms x shares x seeds, see transferbench.study.runs).

Each arm first chooses its learning rate on validation (transferbench.training.tuning), once per share
of the training split, at its first seed; then every seed trains at that rate. Writes
models/<experiment>/runs/<run>/: model.keras (best epoch of the last phase by validation accuracy),
history.csv (per-epoch metrics) and train.json (MLflow run id, which evaluation completes; the rate and
how it was chosen; epochs; training seconds without the validation passes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import keras

from transferbench.core import backend, paths
from transferbench.core.files import write_json, write_text
from transferbench.core.inputs import read_json_input
from transferbench.data.datasets import load_split
from transferbench.models.pretrained import init_weights_file
from transferbench.models.strategies import check_freeze
from transferbench.study import runs
from transferbench.study.experiments import Experiment, with_rate
from transferbench.study.params import Params
from transferbench.tracking import mlflow_runs as tracking
from transferbench.training import distribution
from transferbench.training.batches import ArrayBatches, feed_kind
from transferbench.training.fit import EpochSeconds, configure_precision, finish, fit  # noqa: F401 (re-export)
from transferbench.training.publish import publish
from transferbench.training.tuning import UNTUNED, Tuned, trial_score, tune

log = logging.getLogger(__name__)


def fingerprint(experiment: Experiment, init_record: dict) -> str:
    """Identifies a training configuration, so a resumed run never continues a different one."""
    blob = json.dumps({"experiment": experiment.settings.model_dump(mode="json"),
                       "dataset": experiment.dataset_settings.model_dump(mode="json"),
                       "seed": experiment.seed, "init": init_record,
                       "train_fraction": experiment.train_fraction, "data_seed": experiment.data_seed},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def history_csv(history: list[dict]) -> str:
    """Per-epoch rows; a resumed run can repeat an epoch that was logged but not saved: keep the last.

    ``seconds`` is the training wall-clock time at the end of each epoch, summed over the epochs kept
    (a resumed run's history carries its earlier epochs, so the count goes on), for time to accuracy.
    """
    by_epoch = {int(row["epoch"]): dict(row) for row in history}
    elapsed = 0.0
    for epoch in sorted(by_epoch):
        elapsed += float(by_epoch[epoch].get("epoch_seconds", 0.0))
        by_epoch[epoch]["seconds"] = elapsed
    columns = ["epoch"] + sorted({k for row in by_epoch.values() for k in row} - {"epoch"})
    lines = [",".join(columns)]
    for epoch in sorted(by_epoch):
        row = by_epoch[epoch]
        lines.append(",".join(str(epoch) if c == "epoch" else repr(float(row[c])) if c in row else ""
                              for c in columns))
    return "\n".join(lines) + "\n"


class MlflowEpochMetrics(keras.callbacks.Callback):
    """Logs every numeric epoch metric (train and validation) to the run, step = epoch number."""

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id

    def on_epoch_end(self, epoch, logs=None):
        tracking.log_metrics(self.run_id, {k: float(v) for k, v in (logs or {}).items()}, step=epoch + 1)


def load_batches(experiment: Experiment) -> dict[str, ArrayBatches]:
    """Train (the run's share of it, shuffled by the run's seed) and validation batches of the experiment's dataset."""
    task, batch = experiment.task, experiment.settings.batch_size
    out = {}
    for split in ("train", "validation"):
        images, manifest = load_split(experiment.dataset, split, experiment.image_shape)
        targets = experiment.spec.targets(manifest, experiment.dataset_settings)
        subset = runs.train_subset(len(images), experiment.train_fraction, experiment.data_seed) \
            if split == "train" else None
        if subset is not None:  # a copy in memory: a share is what makes it small enough
            images, targets = images[subset], targets[subset]
        out[split] = ArrayBatches(images, targets, batch, n_outputs=task.n_outputs,
                                  shuffle=split == "train", seed=experiment.seed)
    return out


def runtime(experiment: Experiment, policy: str, image_bytes: int) -> dict[str, str]:
    """What a run trains on, for its log line and MLflow tags: the backend, the devices of its distribution
    (``cpu:0``, ``gpu:0,gpu:1``), the precision policy, the batch per device (the params' batch is the
    global batch, split evenly over the devices in data parallel) and where batches are gathered from
    (``device``: ``image_bytes`` of training images held on the GPU; ``host``: the memory map)."""
    placed = distribution.describe(experiment.settings.batch_size)
    return {"backend": backend.current(), "devices": placed["devices"], "precision": policy,
            "batch_per_device": str(placed["batch_per_device"]),
            "feed": feed_kind(image_bytes, placed["device_count"])}


def tuning_dir(experiment: Experiment, work_root: Path) -> Path:
    """Where the trials of ``experiment``'s arm (at its share and first seed) leave their scores."""
    init_record = read_json_input(runs.init_dir(experiment) / "source.json", f"weights@{experiment.name}")
    return work_root / "tuning" / f"{runs.run_name(experiment)}-{fingerprint(experiment, init_record)}"


def tune_arm(experiment: Experiment, params: Params, work_root: Path) -> Tuned:
    """The arm's learning-rate factor, chosen on validation at ``experiment``'s share and seed (params' tuning)."""
    if params.tuning.kind == "none":
        return UNTUNED
    folder = tuning_dir(experiment, work_root)
    batches = load_batches(experiment)
    return tune(experiment, params.tuning, batches["train"], batches["validation"], folder,
                init_weights_file(runs.init_dir(experiment)))


def trial(experiment: Experiment, params: Params, factor: float, work_root: Path) -> float:
    """One tuning trial of ``experiment``'s arm at ``factor``, alone (a worker's job): its validation score."""
    folder = tuning_dir(experiment, work_root)
    batches = load_batches(experiment)
    return trial_score(experiment, factor, params.tuning.epochs, batches["train"], batches["validation"], folder,
                       init_weights_file(runs.init_dir(experiment)))


def train_run(experiment: Experiment, work_root: Path, policy: str, tuned: Tuned,
              parent: tracking.ParentRun | None = None) -> Path:
    """Train one run (or resume it) and leave model.keras, history.csv and train.json in a finished folder;
    its MLflow run is a child of ``parent``.

    A finished folder survives a kill of a later run in the same stage, so no run is trained twice.
    """
    init_dir = runs.init_dir(experiment)
    init_record = read_json_input(init_dir / "source.json", f"weights@{experiment.name}")
    key = f"{runs.run_name(experiment)}-{fingerprint(experiment, init_record)}"
    done, work_dir = work_root / "done" / key, work_root / key
    if (done / "train.json").exists():
        log.info("%s %s: finished in an earlier attempt", experiment.name, runs.run_name(experiment))
        return done
    batches = load_batches(experiment)
    log.info("%s %s: %s from %s weights (%s, strategy %s), seed %d, %d train / %d validation images",
             experiment.name, runs.run_name(experiment), experiment.settings.model, experiment.weights_label,
             experiment.setting, experiment.settings.strategy, experiment.seed,
             len(batches['train'].images), len(batches['validation'].images))

    on = runtime(experiment, policy, batches["train"].images.nbytes)
    log.info("%s %s: backend %s on %s, precision %s, batch %s per device, batches gathered on the %s",
             experiment.name, runs.run_name(experiment), on["backend"], on["devices"], on["precision"],
             on["batch_per_device"], on["feed"])

    run_file = work_dir / "mlflow_run_id"
    run_id = tracking.start_run(experiment, run_file.read_text() if run_file.exists() else None, runtime=on,
                                tuning=tuned.record(), parent=parent)
    work_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_file, run_id)
    try:
        callbacks = [MlflowEpochMetrics(run_id)]  # after fit's EpochSeconds: time and speed are logged too
        history = fit(experiment, init_weights_file(init_dir), batches["train"], batches["validation"],
                      work_dir, extra_callbacks=callbacks)
    except BaseException:
        tracking.end_run(run_id, status="KILLED")  # resumable: the next attempt reopens this run
        raise
    staging = done.with_name(done.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    write_text(staging / "history.csv", history_csv(history))
    finish(work_dir, staging / "model.keras")
    # Written last: its presence is what marks the run finished.
    write_json(staging / "train.json", {
        "mlflow_run_id": run_id, "weights": experiment.weights_label, "setting": experiment.setting,
        "seed": experiment.seed,
        "learning_rate": experiment.settings.learning_rate, "tuning": tuned.record(),
        "train_fraction": experiment.train_fraction, "train_images": len(batches["train"].images),
        "epochs_planned": experiment.settings.epochs,
        "epochs": len({int(row["epoch"]) for row in history}),
        "seconds": round(sum(row.get("epoch_seconds", 0.0) for row in history), 3),
    })
    os.replace(staging, done)
    return done


def run(params: Params, name: str, work_root: Path | None = None) -> None:
    """Train every run of experiment ``name``; publish them to models/<name>/runs/ once all are done.

    Resumable work lives in ``work_root`` (default tmp/train/<name>/) until then.
    """
    experiments = runs.runs(params, name)
    policy, placement = start(params, name)
    placed = placement.describe(params.experiments[name].batch_size)
    log.info("%s: %d run(s) (%s), %s, distribution %s on %d device(s) (%s), batch %d per device", name,
             len(experiments), ", ".join(runs.run_name(e) for e in experiments), policy, placed["distribution"],
             placed["device_count"], placed["devices"], placed["batch_per_device"])
    work_root = work_root or paths.tmp_dir("train", name)
    parent = tracking.ParentRun(experiments)
    try:
        finished = train_all(experiments, params, work_root, policy, parent)
    except BaseException:
        parent.end(status="KILLED")
        raise
    parent.end()
    publish(name, finished, work_root)


def start(params: Params, name: str) -> tuple[str, distribution.Placement]:
    """What a process that trains experiment ``name``'s runs sets up before any model: the precision policy
    and the devices' placement (the stage's own process, or each of its workers)."""
    check_freeze(f"experiments.{name}", params.experiments[name])  # needs the built core: not in params checks
    # Before any model is built (JAX lays variables out as they are made); needs the backend's devices,
    # so checked here rather than with the params.
    placement = distribution.activate(params.distribution)
    for batch_size in sorted({e.settings.batch_size for e in runs.runs(params, name)}):
        placement.check_batch(f"experiments.{name}.batch_size", batch_size)
    return configure_precision(), placement


def train_tuned(experiment: Experiment, work_root: Path, policy: str, tuned: Tuned,
                parent: tracking.ParentRun) -> Path:
    """One run at its arm's chosen rate (:func:`train_run`); the finished folder."""
    trained = dataclasses.replace(experiment, settings=with_rate(experiment.settings, tuned.chosen_factor))
    return train_run(trained, work_root, policy, tuned, parent)


def train_all(experiments: list[Experiment], params: Params, work_root: Path, policy: str,
              parent: tracking.ParentRun) -> dict[str, Path]:
    """Train (or find finished) every run, each arm tuned first; run folder name -> finished folder."""
    tuned: dict[tuple[str, float], Tuned] = {}
    finished = {}
    for e in experiments:
        arm = (e.weights_label, e.train_fraction)
        if arm not in tuned:  # an arm's first run at each share is at its first seed: it tunes for the others
            tuned[arm] = tune_arm(e, params, work_root)
        finished[runs.run_name(e)] = train_tuned(e, work_root, policy, tuned[arm], parent)
    return finished
