"""What the archive-based sources share: manifest rows for unpacked image files, and their fetch summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from transferbench.data.raw import sha256_file
from transferbench.data.sources.http import download_record

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def is_image(path: Path) -> bool:
    """An image file by name; macOS resource forks (``._x.jpg``) and ``.DS_Store`` are not."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def file_row(raw_dir: Path, path: Path, source_split: str, label: str) -> dict:
    """One ok manifest row for a stored file: key relative to ``raw_dir``, its size and sha256."""
    return {"key": path.relative_to(raw_dir).as_posix(), "source_split": source_split, "label": label,
            "bytes": path.stat().st_size, "sha256": sha256_file(path), "status": "ok", "reason": ""}


def summary(rows: Iterable[Mapping], archive: Path, archive_sha256: str) -> dict:
    """Counts for the fetch report, and the archive used: its address (None when placed by hand), size and
    sha256 (to pin it where none is published)."""
    rows = list(rows)
    by_split: dict[str, dict[str, int]] = {}
    for (split, label), n in sorted(Counter((r["source_split"], r["label"]) for r in rows).items()):
        by_split.setdefault(split, {})[label] = n
    return {"items": len(rows), "ok": sum(r["status"] == "ok" for r in rows), "by_split": by_split,
            "archive": archive.name, "archive_bytes": archive.stat().st_size, "archive_sha256": archive_sha256,
            "archive_url": (download_record(archive) or {}).get("url")}
