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

from transferbench.core import paths
from transferbench.core.errors import BadInput, ConfigError
from transferbench.core.inputs import load_array, missing, prepared_by
from transferbench.config.checks import Checker, integer, number, section, text
from transferbench.core.registry import Registry


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
    # Photo datasets only: the class names (label i is classes[i]), the module under transferbench.data.sources
    # that fetches them (see transferbench.data.raw), and how the source's items become train/validation/test.
    classes: tuple[str, ...] = ()
    source: str | None = None
    assign_splits: Callable[[pd.DataFrame, Mapping[str, Any], int], pd.Series] | None = None
    # The seed's published images per split and class, for the data report (where the seed gave them).
    published_counts: Mapping[str, Mapping[str, int]] | None = None

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
    images = load_array(folder / "images.npy", prepared_by(dataset))
    if not (folder / "manifest.csv").is_file():
        raise missing(folder / "manifest.csv", prepared_by(dataset))
    manifest = read_manifest(folder / "manifest.csv")
    if len(images) != len(manifest):
        raise BadInput(f"{folder}: {len(images)} images but {len(manifest)} manifest rows; "
                       f"the prepared data is inconsistent, run `dvc repro {prepared_by(dataset)}`")
    return images, manifest


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


# ---- photo datasets (issue 3): fetched from their real sources, prepared once -----------------

def _urls(where: str, value: Any) -> None:
    if not isinstance(value, list) or not value or not all(isinstance(u, str) and u for u in value):
        raise ConfigError(f"{where} must be a non-empty list of URLs (tried in order), got {value!r}")
    for url in value:
        if not url.startswith(("https://", "http://", "file://")):
            raise ConfigError(f"{where} has {url!r}; accepted: http://, https:// or file:// addresses")


def _sha256(where: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ConfigError(f"{where} must be 64 lowercase hex digits, or null for a source that publishes none; "
                          f"got {value!r}")


def _optional_text(where: str, value: Any) -> None:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string ('' for the default), got {value!r}")


def photo_targets(manifest: pd.DataFrame, values: Mapping[str, Any], classes: tuple[str, ...]) -> np.ndarray:
    """Class indices (n,) in ``classes`` order; binary tasks get 0/1 the same way."""
    lookup = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(manifest["label"]) - set(lookup))
    if unknown:
        raise ValueError(f"label {unknown[0]!r} is not a class of this dataset; classes: {', '.join(classes)}")
    return manifest["label"].map(lookup).to_numpy(dtype=np.int64)


def _photo(classes: tuple[str, ...], source: str, source_schema: Mapping[str, Checker],
           split_schema: Mapping[str, Checker], assign_splits, published_counts=None) -> DatasetSpec:
    """A photo dataset's entry: its own split sizes and source settings plus the shared preparation keys."""
    schema = {
        **split_schema,
        "height": integer(1), "width": integer(1),
        "workers": integer(0),          # preparation processes; 0 = every core
        # Share of expected images a split may lose (unreadable, duplicate, leaked) before validation fails.
        "tolerance": number(0, 1),
        "source": section(source_schema),
    }
    return DatasetSpec(
        params_schema=schema,
        image_shape=lambda v: (v["height"], v["width"], 3),
        task=lambda v: Task("binary", n_classes=2) if len(classes) == 2 else Task("multiclass", len(classes)),
        targets=lambda manifest, v: photo_targets(manifest, v, classes),
        classes=classes, source=source, assign_splits=assign_splits, published_counts=published_counts,
    )


def _pets_splits(items: pd.DataFrame, values: Mapping[str, Any], seed: int) -> pd.Series:
    from transferbench.data.splits import official

    return official(items["source_split"])


def _kaggle_splits(items: pd.DataFrame, values: Mapping[str, Any], seed: int) -> pd.Series:
    from transferbench.data.splits import stratified

    sizes = {s: values[s] for s in paths.SPLITS}
    return stratified(items["label"], sizes, seed, where="dogs_vs_cats")


def _filtered_splits(items: pd.DataFrame, values: Mapping[str, Any], seed: int) -> pd.Series:
    # The zip has train (2,000) and validation (1,000) only: validation is cut into validation and test.
    from transferbench.data.splits import UNUSED, stratified

    out = pd.Series(UNUSED, index=items.index, dtype=object)
    out[items["source_split"] == "train"] = "train"
    held_out = items["source_split"] == "validation"
    sizes = {"validation": values["validation"], "test": values["test"]}
    out[held_out] = stratified(items.loc[held_out, "label"], sizes, seed, where="cats_and_dogs_filtered")
    return out


def _cifar_splits(items: pd.DataFrame, values: Mapping[str, Any], seed: int) -> pd.Series:
    # CIFAR-10 has train (50,000) and test (10,000): validation is carved out of train, stratified.
    from transferbench.data.splits import stratified

    out = pd.Series("test", index=items.index, dtype=object)
    train = items["source_split"] == "train"
    n_train = int(train.sum()) - values["validation"]
    out[train] = stratified(items.loc[train, "label"], {"validation": values["validation"], "train": n_train},
                            seed, where="cifar10")
    return out


DATASETS.register("pets")(_photo(
    classes=("cat", "dog", "bird"), source="openimages",
    source_schema={
        "csv_base": text,                 # where {split}/{split}-annotations-human-imagelabels.csv live
        "s3_endpoint": _optional_text,    # '' = AWS; a mirror's S3-compatible address otherwise
        "bucket": text,
        "limit": integer(0),              # images per class and split; 0 = all
        "download_workers": integer(1),
        "retries": integer(1),
    },
    split_schema={},
    assign_splits=_pets_splits,
    published_counts={  # seed 000's `ls` of its folders (images with two labels kept under one)
        "train": {"cat": 53137, "dog": 89369, "bird": 105962},
        "validation": {"cat": 303, "dog": 1480, "bird": 1052},
        "test": {"cat": 907, "dog": 4491, "bird": 3222},
    },
))

DATASETS.register("dogs_vs_cats")(_photo(
    classes=("cat", "dog"), source="kaggle_dogs_vs_cats",
    source_schema={"competition": text},
    split_schema={"train": integer(1), "validation": integer(1), "test": integer(1)},
    assign_splits=_kaggle_splits,
))

DATASETS.register("cats_and_dogs_filtered")(_photo(
    classes=("cat", "dog"), source="cats_and_dogs_filtered",
    source_schema={"urls": _urls, "sha256": _sha256},
    split_schema={"validation": integer(1), "test": integer(1)},
    assign_splits=_filtered_splits,
    published_counts={"train": {"cat": 1000, "dog": 1000}, "validation": {"cat": 500, "dog": 500}},
))

DATASETS.register("cifar10")(_photo(
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    source="cifar10",
    source_schema={"urls": _urls, "sha256": _sha256},
    split_schema={"validation": integer(1)},
    assign_splits=_cifar_splits,
    published_counts={"train": {"*": 50000}, "test": {"*": 10000}},
))
