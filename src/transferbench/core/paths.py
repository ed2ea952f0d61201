"""The one place that knows where things live; reads the same stages/paths.yaml that dvc.yaml loads."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]  # src/transferbench/core/paths.py
PARAMS = ROOT / "params.yaml"

with open(Path(__file__).with_name("paths.yaml"), encoding="utf-8") as _f:
    _PATHS = yaml.safe_load(_f)["paths"]

PREPARED = ROOT / _PATHS["prepared"]
RAW = ROOT / _PATHS["raw"]
MODELS = ROOT / _PATHS["models"]
REPORTS = ROOT / _PATHS["reports"]
TMP = ROOT / _PATHS["tmp"]

SPLITS = ("train", "validation", "test")


def prepared(dataset: str) -> Path:
    """Folder with what training reads for ``dataset`` (one sub-folder per split)."""
    return PREPARED / dataset


def split_dir(dataset: str, split: str) -> Path:
    return prepared(dataset) / split


def validation_dir(dataset: str) -> Path:
    """great-expectations results and Data Docs for ``dataset``."""
    return REPORTS / dataset / "validation"


def experiment_model_dir(experiment: str) -> Path:
    return MODELS / experiment


def init_dir(experiment: str) -> Path:
    """Initial weights of the experiment's base (imagenet, a user file, or none)."""
    return experiment_model_dir(experiment) / "init"


def experiment_report_dir(experiment: str) -> Path:
    return REPORTS / experiment


def tmp_dir(*parts: str) -> Path:
    return TMP.joinpath(*parts)


def main_repo_root() -> Path:
    """The repository a run belongs to, also when DVC runs it in a copy (``--temp``, ``--queue``).

    DVC points DVC_ROOT at the parent repository for those runs, so MLflow's store is shared.
    """
    return Path(os.environ.get("DVC_ROOT") or ROOT).resolve()
