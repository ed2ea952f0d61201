"""Safe extraction of zip and tar(.gz) archives.

Every entry is checked before anything is written: none may land outside the target (absolute names, ``..``,
links pointing out, writing through a link) and only files, folders and (tar) links inside are accepted. The
archive's directory (a zip's central directory, a tar's headers) is held to params' ``extraction`` limits
first: total size (and the disk's free space), each entry's compression ratio, and the number of entries.
Extraction goes to a temporary sibling that is renamed into place, so a killed run never looks finished.
Reading a zip entry to its end checks its CRC, which is how zips without a published checksum are verified.
:func:`check_archive` runs every check without writing, so a download can refuse an unsafe archive and try
the next address; one found unsafe only at extraction is moved to ``refused/`` so the next run fetches anew.
"""

from __future__ import annotations

import math
import posixpath
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from transferbench.config.extraction import Extraction
from transferbench.core.errors import BadInput, UserError
from transferbench.core.files import atomic_path, free_bytes, read_json, replace_dir, size_text, write_json
from transferbench.core.inputs import shown
from transferbench.data.raw import record_path, refuse

# Written inside a finished extraction: which archive (by sha256) it came from.
STAMP = ".archive.json"
BLOCK = 1 << 20
# Entries smaller than this may compress any amount (a text file of spaces): only a large one is a bomb.
RATIO_FROM = 1 << 20
DEFAULT_LIMITS = Extraction()


class UnsafeArchive(BadInput):
    """An entry would be written outside the target, or is a kind of file we do not extract."""


class CorruptArchive(BadInput):
    """Not a readable zip or tar, or an entry fails its CRC."""


class ArchiveTooLarge(UserError):
    """The archive would unpack to more than params' ``extraction`` allows, or than the disk has free.

    Not bad content: the archive stays where it is, so raising the limit needs no second download.
    """


def check_limits(path: Path | str, limits: Extraction = DEFAULT_LIMITS, target: Path | str | None = None) -> int:
    """ArchiveTooLarge unless ``path``'s content fits ``limits`` (and the disk under ``target``, if given);
    read from the archive's directory alone. Returns the bytes it unpacks to."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as bundle:
            infos = bundle.infolist()
        _check_count(path, len(infos), limits)
        for info in infos:
            _check_ratio(path, f"entry {info.filename!r}", info.file_size, info.compress_size, limits)
        total = sum(info.file_size for info in infos)
    elif tarfile.is_tarfile(path):
        total, count = 0, 0
        try:
            with tarfile.open(path) as bundle:
                for member in bundle:  # headers only: file bodies are skipped, nothing is kept
                    count += 1
                    if count > limits.max_entries:
                        _check_count(path, count, limits, more=True)
                    total += member.size if member.isfile() else 0
        except (tarfile.TarError, OSError, EOFError) as err:
            raise CorruptArchive(f"{path} is not a readable tar: {err}") from err
        # A compressed tar is one stream: its ratio is the whole archive's.
        _check_ratio(path, "its content", total, path.stat().st_size, limits)
    else:
        raise CorruptArchive(f"{path} is neither a zip nor a tar archive")
    _check_total(path, total, limits, target)
    return total


def _raise_it(key: str, value: int | float) -> str:
    return (f"if the archive is the one you expect, raise the limit: `dvc exp run -S extraction.{key}={value}` "
            f"(or set it in params.yaml)")


def _check_count(path: Path, count: int, limits: Extraction, more: bool = False) -> None:
    if count > limits.max_entries:
        found = f"more than {limits.max_entries:,}" if more else f"{count:,}"
        raise ArchiveTooLarge(f"{shown(path)} has {found} entries (files and folders), over extraction.max_entries "
                              f"{limits.max_entries:,}; " + _raise_it("max_entries", count if not more else
                                                                         limits.max_entries * 10))


def _check_ratio(path: Path, what: str, size: int, compressed: int, limits: Extraction) -> None:
    ratio = size / max(compressed, 1)
    if size >= RATIO_FROM and ratio > limits.max_ratio:
        raise ArchiveTooLarge(f"{shown(path)}: {what} unpacks to {ratio:,.0f} times its compressed size "
                              f"({size_text(size)} from {size_text(compressed)}), over extraction.max_ratio "
                              f"{limits.max_ratio:g}, as a zip bomb does; " + _raise_it("max_ratio", math.ceil(ratio)))


def _check_total(path: Path, total: int, limits: Extraction, target: Path | str | None) -> None:
    if total > limits.max_bytes:
        raise ArchiveTooLarge(f"{shown(path)} unpacks to {size_text(total)} ({total:,} bytes), over "
                              f"extraction.max_bytes {limits.max_bytes:,}; " + _raise_it("max_bytes", total))
    if target is None:
        return
    free = free_bytes(Path(target).parent)
    if total > free:
        raise ArchiveTooLarge(f"{shown(path)} unpacks to {size_text(total)} but the disk under {shown(target)} "
                              f"has {size_text(free)} free; free some space there and run again")


def check_zip(path: Path | str) -> None:
    """Raise CorruptArchive naming the first entry whose CRC fails (or saying the file is not a zip)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CorruptArchive(f"{path} is not a readable zip: {err}") from err
    if bad is not None:
        raise CorruptArchive(f"{path}: entry {bad!r} fails its CRC check; the archive is corrupt")


def check_archive(path: Path | str) -> None:
    """Every check extraction makes, without writing: UnsafeArchive or CorruptArchive (both ValueErrors)."""
    path = Path(path)
    root = path.parent / f".{path.name}.checking"  # never created: entries are only resolved against it
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as bundle:
            for info in bundle.infolist():
                _zip_destination(root, info)
        check_zip(path)
    elif tarfile.is_tarfile(path):
        links: set[str] = set()
        try:
            with tarfile.open(path) as bundle:
                for member in bundle:
                    _check_tar_member(root, member, links)
        except (tarfile.TarError, OSError, EOFError) as err:
            raise CorruptArchive(f"{path} is not a readable tar: {err}") from err
    else:
        raise CorruptArchive(f"{path} is neither a zip nor a tar archive")


def ensure_extracted(archive: Path | str, target: Path | str, archive_sha256: str,
                     limits: Extraction = DEFAULT_LIMITS) -> Path:
    """``target`` holding ``archive``'s content; extracted again only if it came from other bytes (or not at all)."""
    archive, target = Path(archive), Path(target)
    stamp = target / STAMP
    if stamp.is_file() and read_json(stamp).get("sha256") == archive_sha256:
        return target
    try:
        return extract(archive, target, {"archive": archive.name, "sha256": archive_sha256}, limits)
    except (UnsafeArchive, CorruptArchive) as err:
        # Left in place it would be found "present" and refused again on every run.
        record_path(archive).unlink(missing_ok=True)
        where = refuse(archive, archive.name, str(err))
        raise type(err)(f"{err}; the archive is moved to {shown(where)}, the next run fetches it again") from None


def extract(archive: Path | str, target: Path | str, stamp: dict[str, Any] | None = None,
            limits: Extraction = DEFAULT_LIMITS) -> Path:
    """Extract ``archive`` into ``target`` (replacing it) through a temporary sibling renamed into place,
    once its directory is within ``limits``."""
    archive, target = Path(archive), Path(target)
    check_limits(archive, limits, target)
    tmp = target.with_name(f".{target.name}.extracting")
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a killed run
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, tmp)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, tmp)
        else:
            raise CorruptArchive(f"{archive} is neither a zip nor a tar archive")
        if stamp is not None:
            write_json(tmp / STAMP, stamp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, target)
    return target


def extract_member(archive: Path | str, basename: str, dest: Path | str, limits: Extraction = DEFAULT_LIMITS) -> Path:
    """Copy the one zip entry named ``basename`` (in any folder) to ``dest`` atomically, its CRC checked, once
    its size and ratio are within ``limits``."""
    with zipfile.ZipFile(archive) as bundle:
        matches = [i for i in bundle.infolist() if PurePosixPath(i.filename).name == basename and not i.is_dir()]
        if len(matches) != 1:
            names = ", ".join(i.filename for i in bundle.infolist()[:20])
            raise ValueError(f"{archive} has {len(matches)} entries named {basename!r}, expected 1; entries: {names}")
        info = matches[0]
        _check_ratio(Path(archive), f"entry {info.filename!r}", info.file_size, info.compress_size, limits)
        _check_total(Path(archive), info.file_size, limits, dest)
        with atomic_path(dest) as tmp:
            _copy_entry(bundle, matches[0], tmp)
    return Path(dest)


def _inside(root: Path, name: str) -> Path:
    """Where entry ``name`` goes under ``root``; UnsafeArchive if it is absolute, climbs out or resolves outside."""
    pure = PurePosixPath(name)
    if pure.is_absolute() or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"entry {name!r} has an absolute path; only paths inside the archive are accepted")
    if ".." in pure.parts:
        raise UnsafeArchive(f"entry {name!r} climbs out with '..'")
    path = (root / pure).resolve()
    if not path.is_relative_to(root.resolve()):
        raise UnsafeArchive(f"entry {name!r} resolves to {path}, outside {root}")
    return path


def _extract_zip(archive: Path, root: Path) -> None:
    with zipfile.ZipFile(archive) as bundle:
        entries = [(info, _zip_destination(root, info)) for info in bundle.infolist()]
        for info, path in entries:
            if info.is_dir():
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                _copy_entry(bundle, info, path)


def _zip_destination(root: Path, info: zipfile.ZipInfo) -> Path:
    path = _inside(root, info.filename)
    # Unix zips keep the file type in the high bits; zipfile would write a symlink as a text file.
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeArchive(f"entry {info.filename!r} is a {_kind_name(kind)}; accepted: files and folders")
    return path


def _copy_entry(bundle: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    # Reading an entry to its end makes zipfile compare its CRC, so this also verifies it.
    try:
        with bundle.open(info) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, BLOCK)
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise CorruptArchive(f"{bundle.filename}: entry {info.filename!r} is corrupt: {err}") from err


def _extract_tar(archive: Path, root: Path) -> None:
    with tarfile.open(archive) as bundle:
        members = bundle.getmembers()
        links: set[str] = set()
        for member in members:
            _check_tar_member(root, member, links)
        if hasattr(tarfile, "data_filter"):
            # Python's own check (3.11.4+) on top of ours: it also resolves links on disk as it goes.
            bundle.extractall(root, members=members, filter="data")
        else:
            bundle.extractall(root, members=members)


def _check_tar_member(root: Path, member: tarfile.TarInfo, links: set[str]) -> None:
    """UnsafeArchive unless ``member`` is a file, folder or link that stays inside ``root``."""
    name = member.name
    _inside(root, name)
    normal = posixpath.normpath(name)
    # A link extracted earlier could redirect a later entry: refuse paths that go through one.
    parents = {str(p) for p in PurePosixPath(normal).parents}
    if parents & links:
        raise UnsafeArchive(f"entry {name!r} would be written through the link {sorted(parents & links)[0]!r}")
    if member.issym() or member.islnk():
        base = posixpath.dirname(normal) if member.issym() else ""  # hard links are relative to the archive root
        target = member.linkname
        if PurePosixPath(target).is_absolute() or not _stays_inside(posixpath.join(base, target)):
            kind = "symlink" if member.issym() else "hard link"
            raise UnsafeArchive(f"entry {name!r} is a {kind} to {target!r}, outside the archive")
        links.add(normal)
    elif not (member.isfile() or member.isdir()):
        raise UnsafeArchive(f"entry {name!r} is a {_tar_kind(member)}; accepted: files, folders and links inside")


def _stays_inside(relative: str) -> bool:
    normal = posixpath.normpath(relative)
    return normal != ".." and not normal.startswith("../")


def _kind_name(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "symlink"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return f"file of type {oct(mode)}"


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.ischr():
        return "character device"
    if member.isblk():
        return "block device"
    if member.isfifo():
        return "fifo"
    return f"entry of type {member.type!r}"
