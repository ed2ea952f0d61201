"""Initial weights: the one place a params ``weights`` value becomes arms, each a source and maybe a file.

``weights`` is ``imagenet`` (Keras' ImageNet weights), ``none`` (random initialisation; YAML null
too), a path to a Keras ``.h5`` weights file for the model's base or to a trained ``.keras`` model
(a run's ``model.keras``: its base is used), or a list of them: every entry is one arm an experiment
trains from. ``transferbench.models.pretrained`` turns an arm into the file
training starts from.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, ValidationInfo

from transferbench.config.sections import problem
from transferbench.core import paths
from transferbench.core.errors import quoted

IMAGENET = "imagenet"
RANDOM = "none"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"  # a .keras model is a zip archive
ACCEPTED = "imagenet, none, a path to a .h5 weights file or a trained .keras model, or a list of them"
# A file's name becomes its arm's label (file-<name>): folders under models/<experiment>/init/ and runs/, run
# names and report columns. One path component, the same on every system, short enough for the paths below.
FILE_NAME = "[A-Za-z0-9][A-Za-z0-9._-]{0,99}"
KERAS_MODEL = ("a run's model.keras, e.g. models/<experiment>/runs/<run>/model.keras (a model this project built "
               "around the experiment's base, loadable in Keras' safe mode: no Lambda layers)")


# Kornblith, Shlens & Le (2019)'s three settings; transferbench.study.experiments says what each trains.
RANDOM_INIT, FIXED_FEATURES, FINE_TUNED = "random", "fixed_features", "fine_tuned"
SETTINGS = (RANDOM_INIT, FIXED_FEATURES, FINE_TUNED)


@dataclass(frozen=True)
class Arm:
    """One initial-weights source: ``imagenet``, ``none`` or a file (``source`` is the path as written),
    with ``variant`` naming a second setting beside the source's own: ``fixed`` (base frozen under a
    linear head) or ``tuned`` (base fine-tuned, where the experiment's recipe freezes it)."""

    source: str
    file: Path | None = None  # the resolved weights file, for a path
    variant: str = ""

    @property
    def source_label(self) -> str:
        """The initial weights' short name, shared by every variant: imagenet, none, or file-<file name>."""
        return self.source if self.file is None else f"file-{self.file.name}"

    @property
    def label(self) -> str:
        """Short name for run names and report columns: the source's, then ``-fixed`` / ``-tuned``."""
        return f"{self.source_label}-{self.variant}" if self.variant else self.source_label

    def __str__(self) -> str:
        return self.source


def parse_arm(value: Any, root: Path) -> Arm:
    """One entry of ``weights``; a relative path is taken from ``root`` (the repository)."""
    if value is None:  # YAML `weights: null` means the same as `none`
        return Arm(RANDOM)
    if isinstance(value, Arm):
        return value
    if not isinstance(value, str) or not value:
        raise problem(f"{{where}} is {quoted(value)}; accepted: {ACCEPTED}")
    if value in (IMAGENET, RANDOM):
        return Arm(value)
    path = Path(value) if Path(value).is_absolute() else root / value
    if not path.name.endswith((".h5", ".keras")):
        raise problem(f"{{where}} is {quoted(value)}; accepted: imagenet, none, or a path to a Keras weights file "
                      "ending in .h5 or a trained model ending in .keras")
    if not re.fullmatch(FILE_NAME, path.name, flags=re.ASCII):
        raise problem(f"{{where}} file {quoted(value)}: its name cannot be an arm's label; accepted: a file name "
                      f"matching {FILE_NAME} (at most 100 ASCII letters, digits, '.', '_' or '-'), as it becomes "
                      "the label file-<name>, folders and run names: rename the file")
    if not path.is_file():
        raise problem(f"{{where}} file {quoted(value)} does not exist (looked at {path}); accepted: imagenet, none, "
                      "or a path to an existing .h5 weights file or .keras model")
    keras_model = path.name.endswith(".keras")
    with open(path, "rb") as f:
        head = f.read(8)
    if keras_model and not head.startswith(ZIP_SIGNATURE):
        raise problem(f"{{where}} file {quoted(value)} is not a Keras model (a .keras file is a zip archive); "
                      f"accepted: {KERAS_MODEL}")
    if keras_model and not zipfile.is_zipfile(path):  # the zip's directory is at its end: a cut file has none
        raise problem(f"{{where}} file {quoted(value)} is truncated (a zip without its directory at the end); "
                      f"accepted: {KERAS_MODEL}")
    if not keras_model and head != HDF5_SIGNATURE:
        raise problem(f"{{where}} file {quoted(value)} is not an HDF5 file (corrupt or another format); "
                      "save one with `model.save_weights('name.weights.h5')`")
    return Arm(value, path)


def parse_arms(value: Any, root: Path) -> tuple[Arm, ...]:
    """A ``weights`` value (one source or a list) as its arms: at least one, none named twice."""
    listed = list(value) if isinstance(value, (list, tuple)) else [value]
    if not listed:
        raise problem(f"{{where}} is an empty list; accepted: {ACCEPTED}")
    arms = tuple(parse_arm(v, root) for v in listed)
    labels = [arm.label for arm in arms]
    if len(set(labels)) != len(labels):
        raise problem(f"{{where}} {[str(v) for v in listed]} names one source twice; accepted: each source once")
    return arms


def root_of(info: ValidationInfo) -> Path:
    """The folder relative weights paths start from (the repository, unless the caller says otherwise)."""
    return Path((info.context or {}).get("root", paths.ROOT))


def _arms(value: Any, info: ValidationInfo) -> tuple[Arm, ...]:
    return parse_arms(value, root_of(info))


def _sources(arms: tuple[Arm, ...] | None) -> list[str] | None:
    """Arms dump as the sources written (paths unresolved), so a dumped section reads back the same."""
    return None if arms is None else [arm.source for arm in arms]


# A params ``weights`` value: parsed into arms (``null`` and ``none`` alike are the random arm), dumped as
# written. ``OwnArms`` is an experiment's optional override; absent (None) it takes the top level's arms.
Arms = Annotated[tuple[Arm, ...], BeforeValidator(_arms), PlainSerializer(_sources)]
OwnArms = Annotated[tuple[Arm, ...] | None, BeforeValidator(_arms), PlainSerializer(_sources)]
