"""An experiment's finished runs published together as the train stage's output, models/<experiment>/runs/."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from transferbench.core import paths
from transferbench.core.files import replace_dir


def publish(name: str, finished: Mapping[str, Path], work_root: Path) -> None:
    """Copy every finished run folder (run name -> folder) into models/<name>/runs/, which replaces the
    old one in one rename, then drop the stage's resumable work in ``work_root``.

    Apart from the training (transferbench.training.train), which imports Keras: the stage's coordinator
    of worker processes (transferbench.training.workers) publishes without starting a backend.
    """
    out = paths.experiment_model_dir(name) / "runs"
    staging = out.with_name("runs.partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for run_name, folder in finished.items():
        shutil.copytree(folder, staging / run_name)
    replace_dir(staging, out)
    shutil.rmtree(work_root)
