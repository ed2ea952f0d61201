"""Running a stage as DVC does (``python -m stages.<name>``) on a copy of the code and params, without DVC.

The copy's root is the stages' repository root (transferbench.core.paths.ROOT), so they read and write
under it, not in this checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from transferbench.core import paths


def one_untuned_run(params: dict) -> dict:
    """Shrink params.yaml's study to one run per arm at the recipe's rate: tests that are not about seeds
    or tuning train a third as often, and those that are set them back."""
    params["seeds"] = 1
    params["tuning"] = {"kind": "none", "factors": [1.0], "epochs": 1.0}
    return params


def copy_code(root: Path, edit: Callable[[dict], None] = lambda params: None) -> Path:
    """The stages, the package and params.yaml (shrunk by one_untuned_run, then ``edit``) under ``root``."""
    for folder in ("src", "stages"):
        shutil.copytree(paths.ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = one_untuned_run(yaml.safe_load(paths.PARAMS.read_text(encoding="utf-8")))
    edit(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return root


def run_stage(root: Path, stage: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m stages.<stage> <args>`` on the copy at ``root``; MLflow and Keras' cache stay inside it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(PYTHONPATH=f"{root / 'src'}{os.pathsep}{root}", KERAS_HOME=str(root / "keras_home"),
               MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}")
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", *args], check=False, cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
