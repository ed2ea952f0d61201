"""Writing files: atomically (a reader sees the old file or the new one, never half of either), with the
mode the umask gives, and a full disk as a one-line error naming the file, never a signal."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transferbench.core.errors import NoSpace, NotWritable
from transferbench.core.inputs import shown

# Why a write can fail for want of room, and how to say so.
SPACE_ERRORS = {
    errno.ENOSPC: "no space left on the disk",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file would exceed the file size limit (`ulimit -f`) or what the filesystem allows",
}


def umask() -> int:
    """The process's umask, read without changing it where Linux shows it (no window for other threads)."""
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def size_text(n: int) -> str:
    """``n`` bytes for people: 512 B, 1.5 MiB, 2.0 GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def free_bytes(path: Path | str) -> int:
    """Free space on the disk that holds ``path`` (or would: its nearest existing folder)."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    return shutil.disk_usage(existing).free


def space_reason(err: OSError) -> str | None:
    """Why ``err`` says there is no room to write, or None if it is some other failure."""
    if err.errno in SPACE_ERRORS:
        return SPACE_ERRORS[err.errno]
    # numpy's tofile (np.save) reports a short fwrite without an errno: "4800 requested and 1920 written".
    if err.errno is None and re.fullmatch(r"\d+ requested and \d+ written", str(err)):
        return "the disk is full or the file size limit (`ulimit -f`) is reached"
    return None


def no_space(err: OSError, path: Path | str, needed: int | None = None) -> NoSpace:
    """The failed write ``err`` to ``path`` as one line naming the file, the bytes needed and free."""
    what = f"{size_text(needed)} for {shown(path)}" if needed is not None else shown(path)
    reason = space_reason(err) or err.strerror
    return NoSpace(f"cannot write {what}: {reason} ({size_text(free_bytes(path))} free there); "
                   "free some space on that disk and rerun the stage")


@contextlib.contextmanager
def space_checked(path: Path | str, needed: int | None = None) -> Iterator[None]:
    """Turn a write in the block that fails for want of room into :class:`NoSpace` naming ``path``."""
    try:
        yield
    except OSError as err:
        if space_reason(err) is None:
            raise
        raise no_space(err, path, needed) from None


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    The file gets the mode a plain ``open`` would (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with space_checked(path):
            yield tmp_path
        os.chmod(tmp_path, 0o666 & ~umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def temp_dir(beside: Path | str) -> Path:
    """A new empty folder beside ``beside`` (to fill, then move into place), with a plain mkdir's mode."""
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{beside.name}.", suffix=".partial", dir=beside.parent))
    folder.chmod(0o777 & ~umask())  # mkdtemp makes it private
    return folder


def check_writable(*folders: Path | str) -> None:
    """NotWritable unless each of ``folders`` exists as a writable folder or could be created.

    A stage asks before its work, so a read-only output folder stops it at once, not after hours.
    Nothing is left behind: the probe file is deleted and no folder is created.
    """
    for folder in map(Path, folders):
        folder = folder.absolute()
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        target = shown(folder)
        if not existing.is_dir():
            raise NotWritable(f"cannot create {target}: {shown(existing)} is a file, not a folder; "
                              "move it away and rerun the stage")
        try:
            with tempfile.TemporaryFile(dir=existing, prefix=".write-test."):
                pass
        except OSError as err:
            where = "" if existing == folder else f" (to create {target} in)"
            raise NotWritable(f"cannot write to {shown(existing)}{where}: {err.strerror}; make it writable "
                              f"(`chmod u+w {shown(existing)}`, or its owner) and rerun the stage") from None


def allocate(path: Path | str, offset: int, length: int, *, name: Path | str | None = None) -> None:
    """Reserve bytes [offset, offset + length) of the file at ``path`` on the disk.

    Writes through a memory map into a sparse file find a full disk as SIGBUS, a crash without a
    message; once the blocks are reserved they cannot fail, and a full disk is :class:`NoSpace` here,
    naming ``name`` (default ``path``). Data already there is kept.
    """
    if length <= 0:
        return
    with space_checked(name or path, length):
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, offset, length)
        finally:
            os.close(fd)


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


def create_zeros_npy(path: Path | str, shape: tuple[int, ...], *, reserve: bool = True) -> None:
    """A zero-filled uint8 ``.npy`` of ``shape`` that workers fill row by row through memory maps.

    Created under a temporary name, so a kill mid-creation cannot leave a short file that looks ready.
    ``reserve``: allocate its disk space now (see :func:`allocate`); without it the file is sparse and
    whoever writes rows reserves them first.
    """
    import numpy as np

    with atomic_path(path) as tmp, space_checked(path, math.prod(shape)):
        if shape[0] == 0:  # an empty array cannot be memory-mapped
            with open(tmp, "wb") as f:
                np.save(f, np.zeros(shape, dtype=np.uint8))
        else:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            array.flush()
            offset, size = array.offset, array.nbytes
            del array
            if reserve:
                allocate(tmp, offset, size, name=path)


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
