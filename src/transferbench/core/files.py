"""Atomic writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path | str, obj: Any) -> None:
    # sort_keys and a fixed indent keep the bytes identical for identical content.
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path | str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def file_digest(path: Path | str, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``algorithm`` as hashlib names it: sha256, md5, ...)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def open_work_dir(work_dir: Path, recipe: dict) -> None:
    """Resumable work in ``work_dir`` for ``recipe`` (what its output depends on), kept in plan.json.

    A work dir left by other inputs or another chunk size holds chunks that do not fit: start over.
    """
    plan = Path(work_dir) / "plan.json"
    if Path(work_dir).exists() and (not plan.exists() or read_json(plan) != recipe):
        shutil.rmtree(work_dir)
    if not plan.exists():
        write_json(plan, recipe)


def create_zeros_npy(path: Path | str, shape: tuple[int, ...]) -> None:
    """A zero-filled uint8 ``.npy`` of ``shape`` that workers fill row by row through memory maps.

    Created under a temporary name, so a kill mid-creation cannot leave a short file that looks ready.
    """
    import numpy as np

    with atomic_path(path) as tmp:
        if shape[0] == 0:  # an empty array cannot be memory-mapped
            with open(tmp, "wb") as f:
                np.save(f, np.zeros(shape, dtype=np.uint8))
        else:
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape).flush()


def replace_dir(src: Path, dst: Path) -> None:
    """Move a finished folder into place, replacing what was there."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old)
    else:
        os.replace(src, dst)
