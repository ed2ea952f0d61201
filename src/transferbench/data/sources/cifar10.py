"""Source of `cifar10`: the CIFAR-10 python batches (50,000 train and 10,000 test 32x32 images, 10 classes).

raw_dir/cifar-10-python.tar.gz is the download; raw_dir/extracted/cifar-10-batches-py/ its pickled batches.
Items are not files: a key is ``<batch>:<index>`` and :func:`load` gives its pixels.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from transferbench.config.extraction import Extraction
from transferbench.data.raw import sha256_file, write_raw_manifest
from transferbench.data.sources.archives import DEFAULT_LIMITS, check_archive, ensure_extracted
from transferbench.data.sources.http import download
from transferbench.data.sources.unpacked import summary

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = Path("extracted") / "cifar-10-batches-py"
BATCHES = {**{f"data_batch_{i}": "train" for i in range(1, 6)}, "test_batch": "test"}
PARAM = "cifar10.source"
SIDE = 32

# What a CIFAR batch pickle may name: numpy's array reconstruction (numpy 1 and 2 spellings), and the
# codec that protocol-2 pickles written by Python 3 use for bytes. Anything else (os.system...) is refused,
# so a tampered archive from a mirror without a pinned sha256 cannot run code through pickle.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"a CIFAR batch may not refer to {module}.{name}; the file is not a "
                                         "CIFAR-10 batch (or was tampered with)")
        return super().find_class(module, name)


def fetch(values: Any, raw_dir: Path | str, seed: int, limits: Extraction = DEFAULT_LIMITS) -> dict:
    """Download (or find) the archive, unpack it safely, and write one manifest row per image."""
    from transferbench.config.sections import parse
    from transferbench.data.datasets import Cifar10Params

    source, raw_dir = parse(Cifar10Params, values, "cifar10").source, Path(raw_dir)
    archive = download(source.urls, raw_dir / ARCHIVE, sha256=source.sha256, check=check_archive,
                       param=f"{PARAM}.urls")
    archive_sha256 = source.sha256 or sha256_file(archive)
    ensure_extracted(archive, raw_dir / "extracted", archive_sha256, limits)
    names = label_names(raw_dir / FOLDER / "batches.meta")
    rows = [row for batch, split in BATCHES.items() for row in batch_rows(raw_dir, batch, split, names)]
    write_raw_manifest(raw_dir, rows)
    return summary(rows, archive, archive_sha256)


def load(raw_dir: Path | str, key: str) -> np.ndarray:
    """The item's pixels: a read-only uint8 (32, 32, 3) HWC view into its cached batch."""
    batch, _, index = key.partition(":")
    if batch not in BATCHES or not index.isdigit():
        raise ValueError(f"CIFAR-10 key {key!r}; accepted: <batch>:<index> with batch one of {', '.join(BATCHES)}")
    return _batch(str(Path(raw_dir) / FOLDER / batch))[0][int(index)]


def label_names(meta: Path) -> list[str]:
    with open(meta, "rb") as f:
        names = _BatchUnpickler(f, encoding="bytes").load()[b"label_names"]
    return [n.decode("ascii") if isinstance(n, bytes) else n for n in names]


def batch_rows(raw_dir: Path, batch: str, split: str, names: list[str]) -> list[dict]:
    """One row per image of ``batch``: sha256 over its HWC pixel bytes, label by name."""
    images, labels = _batch(str(raw_dir / FOLDER / batch))
    return [{"key": f"{batch}:{i:04d}", "source_split": split, "label": names[label], "bytes": image.nbytes,
             "sha256": hashlib.sha256(image.tobytes()).hexdigest(), "status": "ok", "reason": ""}
            for i, (image, label) in enumerate(zip(images, labels, strict=True))]


# Preparation calls load() from worker processes tens of thousands of times: unpickle each batch once
# per process (six batches of 30 MB).
@functools.lru_cache(maxsize=len(BATCHES))
def _batch(path: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """A batch's images as uint8 (n, 32, 32, 3) HWC (read-only) and its labels."""
    with open(path, "rb") as f:
        content = _BatchUnpickler(f, encoding="bytes").load()
    data = np.asarray(content[b"data"], dtype=np.uint8)
    labels = tuple(int(x) for x in content[b"labels"])
    if data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE or len(data) != len(labels):
        raise ValueError(f"{path}: data of shape {data.shape} with {len(labels)} labels; a CIFAR-10 batch "
                         f"has (n, {3 * SIDE * SIDE}) bytes and n labels")
    # Rows are stored channel by channel (1024 red, 1024 green, 1024 blue): CHW -> HWC.
    images = np.ascontiguousarray(data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1))
    images.flags.writeable = False
    return images, labels
