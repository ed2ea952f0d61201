"""What prepared data must satisfy, as great-expectations suites over three frames.

``transferbench.data.validation`` builds the frames from a prepared dataset (layout in ``transferbench.data.datasets``):

    manifest  one row per manifest row: label, sha256 (+ the dataset's extras), split
    splits    one row per split: split, rows (manifest), images (array length), ndim, height,
              width, channels, dtype
    images    one row per image: split, index, mean, std, sha256 (of the pixels), manifest_sha256

Checks on schema, hashes, shapes and pixels are shared; a dataset registers in :data:`CHECKS` only
what its labels and split sizes must be.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.expectations.row_conditions import Column

from transferbench.core.paths import SPLITS
from transferbench.core.registry import Registry
from transferbench.data.datasets import DATASETS, CaptchaParams, PhotoParams
from transferbench.data.images import MIN_PIXEL_STD, PIXEL_MEAN_RANGE, PIXELS

FRAMES = ("manifest", "splits", "images")

# Per-image thresholds live with the code that decodes images (transferbench.data.images), so both agree.
SPLIT_MEAN_RANGE = (10.0, 245.0)     # mean of a split's image means; CAPTCHAs ~225, photos ~110


@dataclass(frozen=True)
class DatasetChecks:
    """What one dataset adds to the shared checks."""

    labels: Sequence[gxe.Expectation]            # on the manifest frame
    split_sizes: Mapping[str, int] | None = None  # images per split, where params fix them
    extra_columns: tuple[str, ...] = field(default=())  # manifest columns beyond label and sha256
    # (min, max) images per split, where some loss is tolerated (photos: unreadable, duplicates, leaks)
    split_ranges: Mapping[str, tuple[int, int]] | None = None


# (params section, meta.json of the prepared data) -> the dataset's own checks
CHECKS: Registry[Callable[[Any, Mapping[str, Any]], DatasetChecks]] = Registry(
    "dataset with validation checks")


def in_split(split: str) -> Any:
    """Row condition that restricts an expectation to one split."""
    return Column("split") == split


def _where(split: str) -> dict:
    return {"row_condition": in_split(split), "condition_parser": "great_expectations"}


def _named(expectation: gxe.Expectation, check: str) -> gxe.Expectation:
    # meta.check is the human sentence stderr and summary.json show; Data Docs keep GX's own text.
    expectation.meta = {**(expectation.meta or {}), "check": check}
    return expectation


def manifest_expectations(checks: DatasetChecks) -> list[gxe.Expectation]:
    """Shared manifest checks (schema, hashes), then the dataset's label checks."""
    columns = ["label", "sha256", *checks.extra_columns, "split"]
    return [
        _named(gxe.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=True),
               f"manifest columns are exactly {', '.join(columns)}"),
        _named(gxe.ExpectColumnValuesToMatchRegex(column="sha256", regex="^[0-9a-f]{64}$"),
               "sha256 is 64 lowercase hex digits"),
        _named(gxe.ExpectColumnValuesToBeUnique(column="sha256"), "no image appears twice, in any split"),
        *checks.labels,
    ]


def split_expectations(checks: DatasetChecks, image_shape: tuple[int, int, int]) -> list[gxe.Expectation]:
    """Per-split counts against params, and the array shape and dtype training expects."""
    height, width, channels = image_shape
    out: list[gxe.Expectation] = [
        _named(gxe.ExpectColumnPairValuesToBeEqual(column_A="images", column_B="rows"),
               "every split has one manifest row per image"),
    ]
    for split, n in (checks.split_sizes or {}).items():
        for column, what in (("rows", "manifest rows"), ("images", "images")):
            out.append(_named(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[int(n)], **_where(split)),
                              f"{split} has {n} {what}"))
    for split, (low, high) in (checks.split_ranges or {}).items():
        out.append(_named(gxe.ExpectColumnValuesToBeBetween(column="images", min_value=int(low), max_value=int(high),
                                                            **_where(split)),
                          f"{split} has {low}-{high} images"))
    for column, value, what in (("ndim", 4, "arrays are (n, H, W, C)"),
                                ("height", height, f"images are {height} high"),
                                ("width", width, f"images are {width} wide"),
                                ("channels", channels, f"images have {channels} channels"),
                                ("dtype", "uint8", "pixels are uint8")):
        out.append(_named(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[value]), what))
    return out


def image_expectations() -> list[gxe.Expectation]:
    """Per-image pixel statistics that rule out blank images, and hashes that tie images to rows."""
    low, high = PIXEL_MEAN_RANGE
    out: list[gxe.Expectation] = [
        _named(gxe.ExpectColumnPairValuesToBeEqual(column_A="sha256", column_B="manifest_sha256"),
               "manifest row i's sha256 is the hash of images[i]"),
        _named(gxe.ExpectColumnValuesToBeBetween(column="std", min_value=MIN_PIXEL_STD, strict_min=True),
               f"no blank image (pixel std > {MIN_PIXEL_STD})"),
        _named(gxe.ExpectColumnValuesToBeBetween(column="mean", min_value=low, max_value=high,
                                                  strict_min=True, strict_max=True),
               f"no all-black or all-white image ({low} < pixel mean < {high})"),
    ]
    for split in SPLITS:
        low, high = SPLIT_MEAN_RANGE
        out.append(_named(gxe.ExpectColumnMeanToBeBetween(column="mean", min_value=low, max_value=high,
                                                          **_where(split)),
                          f"{split}'s mean image brightness is in [{low}, {high}]"))
    return out


def build_suites(dataset: str, values: Any,
                 meta: Mapping[str, Any] | None = None) -> dict[str, gx.ExpectationSuite]:
    """One suite per frame (named ``<dataset>.<frame>``) for ``dataset`` with params ``values``.

    ``meta`` is the prepared data's meta.json, which photo datasets' checks read their expected counts from.
    """
    check = CHECKS.get(dataset)
    values = DATASETS.get(dataset).section(values, dataset)
    checks = check(values, meta or {})
    image_shape = values.image_shape
    expectations = {
        "manifest": manifest_expectations(checks),
        "splits": split_expectations(checks, image_shape),
        "images": image_expectations(),
    }
    return {frame: gx.ExpectationSuite(name=f"{dataset}.{frame}", expectations=expectations[frame])
            for frame in FRAMES}


# ---- datasets -------------------------------------------------------------------------------

@CHECKS.register("captcha")
def captcha_checks(values: CaptchaParams, meta: Mapping[str, Any]) -> DatasetChecks:
    """Labels are ``length`` characters of ``alphabet``, unique within and across splits."""
    pattern = f"^[{re.escape(values.alphabet)}]{{{values.length}}}$"
    labels = [
        _named(gxe.ExpectColumnValuesToMatchRegex(column="label", regex=pattern),
               f"labels are {values.length} characters of the alphabet"),
        *(_named(gxe.ExpectColumnValuesToBeUnique(column="label", **_where(split)),
                 f"labels are unique within {split}") for split in SPLITS),
        # Over the concatenation: a string in two splits would leak the test set into training.
        _named(gxe.ExpectColumnValuesToBeUnique(column="label"), "labels are unique across all splits"),
    ]
    return DatasetChecks(labels=labels, split_sizes={split: getattr(values, split) for split in SPLITS})


PHOTO_EXTRA_COLUMNS = ("key", "source_sha256", "orig_width", "orig_height", "converted", "format", "format_note")


def requested_sizes(values: PhotoParams) -> dict[str, int]:
    """The images per split that a photo dataset's params ask for (``train``, ``validation``, ``test`` keys)."""
    return {split: getattr(values, split) for split in SPLITS if split in type(values).model_fields}


def photo_checks(dataset: str, values: PhotoParams, meta: Mapping[str, Any]) -> DatasetChecks:
    """Labels from the dataset's classes, every class in every split, sizes within tolerance of expected.

    The expected counts are the sizes params ask for, and for a split params do not size (a source's
    own split) what preparation assigned to it before dropping unreadable, duplicate and leaked images
    (meta.json ``expected``); ``tolerance`` is the share it may lose. A split that came out short of
    its params therefore fails, whatever meta.json says.
    """
    classes = list(DATASETS.get(dataset).classes)
    expected = {**(meta.get("expected") or {}), **requested_sizes(values)}
    if set(expected) != set(SPLITS):
        # Without them the size check would pass vacuously: make it fail visibly instead.
        expected = {split: expected.get(split, -1) for split in SPLITS}
    labels = [
        _named(gxe.ExpectColumnValuesToBeInSet(column="label", value_set=classes),
               f"labels are classes of {dataset}: {', '.join(classes)}"),
        *(_named(gxe.ExpectColumnDistinctValuesToEqualSet(column="label", value_set=classes, **_where(split)),
                 f"every class appears in {split}") for split in SPLITS),
        _named(gxe.ExpectColumnValuesToBeUnique(column="key"), "no source image is used twice"),
        # Empty would mean the format was never looked at (a manifest from before formats were recorded).
        _named(gxe.ExpectColumnValuesToMatchRegex(column="format", regex=r"^[A-Z0-9]+$|^" + PIXELS + "$"),
               f"every image's real format is recorded (Pillow's name, or {PIXELS})"),
    ]
    tolerance = values.tolerance
    ranges = {split: (math.ceil(n * (1 - tolerance)) if n >= 0 else 1, max(n, 0)) for split, n in expected.items()}
    return DatasetChecks(labels=labels, split_ranges=ranges, extra_columns=PHOTO_EXTRA_COLUMNS)


for _name in DATASETS.names():
    if DATASETS.get(_name).source is not None:
        CHECKS.register(_name)(functools.partial(photo_checks, _name))
