"""Stage `train@<experiment>`: train the experiment's model on its prepared dataset.

Writes models/<experiment>/model.keras (best epoch by validation accuracy),
models/<experiment>/mlflow_run.json (the MLflow run that evaluation completes) and
reports/<experiment>/history.csv (per-epoch metrics, for `dvc plots`).
"""

from __future__ import annotations

import hashlib
import json
import sys

from stages import paths, tracking
from stages.config import ConfigError, load_params
from stages.datasets import load_split
from stages.experiments import Experiment, resolve
from stages.feed import ArrayBatches
from stages.io import read_json, write_json, write_text
from stages.training import configure_precision, finish, fit
from stages.weights import init_weights_file


def fingerprint(experiment: Experiment, init_record: dict) -> str:
    """Identifies a training configuration, so a resumed run never continues a different one."""
    blob = json.dumps({"experiment": experiment.values, "dataset": experiment.dataset_values,
                       "seed": experiment.seed, "init": init_record}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def history_csv(history: list[dict]) -> str:
    """Per-epoch rows; a resumed run can repeat an epoch that was logged but not saved: keep the last."""
    by_epoch = {int(row["epoch"]): row for row in history}
    columns = ["epoch"] + sorted({k for row in history for k in row} - {"epoch"})
    lines = [",".join(columns)]
    for epoch in sorted(by_epoch):
        row = by_epoch[epoch]
        lines.append(",".join(str(epoch) if c == "epoch" else repr(float(row[c])) if c in row else ""
                              for c in columns))
    return "\n".join(lines) + "\n"


def run(experiment: Experiment) -> None:
    init_dir = paths.init_dir(experiment.name)
    init_record = read_json(init_dir / "source.json")
    work_dir = paths.tmp_dir("train", f"{experiment.name}-{fingerprint(experiment, init_record)}")
    policy = configure_precision()

    task, batch = experiment.task, experiment.values["batch_size"]
    splits = {}
    for split in ("train", "validation"):
        images, manifest = load_split(experiment.dataset, split)
        targets = experiment.spec.targets(manifest, experiment.dataset_values)
        splits[split] = ArrayBatches(images, targets, batch, n_outputs=task.n_outputs,
                                     shuffle=split == "train", seed=experiment.seed)
    print(f"{experiment.name}: {experiment.values['model']} from {experiment.weights_label} weights, "
          f"{len(splits['train'].images)} train / {len(splits['validation'].images)} validation images, "
          f"{policy}", file=sys.stderr)

    run_file = work_dir / "mlflow_run_id"
    run_id = tracking.start_run(experiment, run_file.read_text() if run_file.exists() else None)
    work_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_file, run_id)
    try:
        history = fit(experiment, init_weights_file(init_dir), splits["train"], splits["validation"],
                      work_dir, extra_callbacks=[tracking.MlflowEpochMetrics(run_id)])
    except BaseException:
        tracking.end_run(run_id, status="KILLED")  # resumable: the next run reopens this one
        raise
    write_text(paths.experiment_report_dir(experiment.name) / "history.csv", history_csv(history))
    write_json(paths.experiment_model_dir(experiment.name) / "mlflow_run.json",
               {"run_id": run_id})
    finish(work_dir, paths.experiment_model_dir(experiment.name) / "model.keras")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m stages.train <experiment>")
    try:
        experiment = resolve(load_params(), argv[0])
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    run(experiment)


if __name__ == "__main__":
    main()
