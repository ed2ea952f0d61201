"""The dataset registry: what each dataset's params look like, its task, and how to read it.

A prepared dataset, whatever its source, is laid out the same way, so training never decodes images:

    data/prepared/<dataset>/meta.json            dataset, image_shape [H, W, 3], split sizes, extras
    data/prepared/<dataset>/<split>/images.npy   uint8 array (n, H, W, 3), memory-mappable
    data/prepared/<dataset>/<split>/manifest.csv row i describes images[i]: label, sha256 (+ extras)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from stages import paths
from stages.config import Checker, ConfigError, integer, section, text
from stages.io import read_json
from stages.registry import Registry


@dataclass(frozen=True)
class Task:
    """What the model must predict: ``binary``, ``multiclass`` or ``multihead`` (n_outputs x n_classes)."""

    kind: str
    n_classes: int
    n_outputs: int = 1


@dataclass(frozen=True)
class DatasetSpec:
    params_schema: Mapping[str, Checker]
    image_shape: Callable[[Mapping[str, Any]], tuple[int, int, int]]
    task: Callable[[Mapping[str, Any]], Task]
    # manifest -> integer targets: shape (n,) for one output, (n, n_outputs) for several
    targets: Callable[[pd.DataFrame, Mapping[str, Any]], np.ndarray]
    cross_check: Callable[[str, Mapping[str, Any]], None] = field(default=lambda where, values: None)

    def check_params(self, where: str, values: Any) -> None:
        section(self.params_schema)(where, values)
        self.cross_check(where, values)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def read_manifest(path) -> pd.DataFrame:
    # Labels such as "012345" must stay strings, and "NA" is a label, not a missing value.
    return pd.read_csv(path, dtype={"label": str, "sha256": str}, keep_default_na=False)


def load_split(dataset: str, split: str) -> tuple[np.ndarray, pd.DataFrame]:
    """The split's images (memory-mapped, read-only) and its manifest."""
    folder = paths.split_dir(dataset, split)
    images = np.load(folder / "images.npy", mmap_mode="r")
    manifest = read_manifest(folder / "manifest.csv")
    if len(images) != len(manifest):
        raise ValueError(f"{folder}: {len(images)} images but {len(manifest)} manifest rows; "
                         "the prepared data is inconsistent, rerun its stage")
    return images, manifest


def load_meta(dataset: str) -> dict:
    return read_json(paths.prepared(dataset) / "meta.json")


# ---- captcha (seed 000) ---------------------------------------------------------------------

def _alphabet(where: str, value: Any) -> None:
    text(where, value)
    if len(set(value)) != len(value):
        raise ConfigError(f"{where} has a repeated character: {value!r}")
    if not value.isascii() or not value.isprintable() or " " in value:
        raise ConfigError(f"{where} must be printable ASCII without spaces, got {value!r}")


def _captcha_cross_check(where: str, values: Mapping[str, Any]) -> None:
    total = values["train"] + values["validation"] + values["test"]
    distinct = len(values["alphabet"]) ** values["length"]
    # Splits must not share a string, so there must be far more strings than images.
    if total * 2 > distinct:
        raise ConfigError(f"{where}: {total} CAPTCHAs need more distinct strings than "
                          f"{len(values['alphabet'])}**{values['length']} = {distinct}; raise length or alphabet")


def captcha_targets(manifest: pd.DataFrame, values: Mapping[str, Any]) -> np.ndarray:
    """(n, length) indices into the alphabet."""
    alphabet = values["alphabet"]
    lookup = np.full(128, -1, dtype=np.int64)
    lookup[[ord(c) for c in alphabet]] = np.arange(len(alphabet))
    codes = np.frombuffer("".join(manifest["label"]).encode("ascii"), dtype=np.uint8)
    targets = lookup[codes].reshape(len(manifest), values["length"])
    if (targets < 0).any():
        raise ValueError("a CAPTCHA label has a character outside the alphabet")
    return targets


DATASETS.register("captcha")(DatasetSpec(
    params_schema={
        "train": integer(1), "validation": integer(1), "test": integer(1),
        "width": integer(1), "height": integer(1), "length": integer(1, 32),
        "alphabet": _alphabet, "workers": integer(0),
    },
    image_shape=lambda v: (v["height"], v["width"], 3),
    task=lambda v: Task("multihead", n_classes=len(v["alphabet"]), n_outputs=v["length"]),
    targets=captcha_targets,
    cross_check=_captcha_cross_check,
))
