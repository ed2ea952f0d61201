"""Source of `cats_and_dogs_filtered`: Google's zip of 2,000 train and 1,000 validation cat and dog photos.

raw_dir/cats_and_dogs_filtered.zip is the download; raw_dir/extracted/cats_and_dogs_filtered/{train,validation}/
{cats,dogs}/*.jpg its content, one manifest row per image.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transferbench.config.extraction import Extraction
from transferbench.data.raw import SourceUnavailable, sha256_file, write_raw_manifest
from transferbench.data.sources.archives import DEFAULT_LIMITS, check_archive, ensure_extracted
from transferbench.data.sources.http import download, download_record
from transferbench.data.sources.unpacked import file_row, is_image, summary

ARCHIVE = "cats_and_dogs_filtered.zip"
TOP = "cats_and_dogs_filtered"
SPLITS = ("train", "validation")
FOLDER_LABELS = {"cats": "cat", "dogs": "dog"}
PARAM = "cats_and_dogs_filtered.source"

log = logging.getLogger(__name__)


def fetch(values: Any, raw_dir: Path | str, seed: int, limits: Extraction = DEFAULT_LIMITS) -> dict:
    """Download (or find) the zip, unpack it safely, and write one manifest row per photo."""
    from transferbench.config.sections import parse
    from transferbench.data.datasets import CatsAndDogsFilteredParams

    source, raw_dir = parse(CatsAndDogsFilteredParams, values, TOP).source, Path(raw_dir)
    # Google publishes no checksum (sha256 is null in params.yaml): reading every entry back against its
    # CRC is what vouches for the zip then, and the sha256 we got is reported so it can be pinned.
    archive = download(source.urls, raw_dir / ARCHIVE, sha256=source.sha256, check=check_archive,
                       param=f"{PARAM}.urls")
    archive_sha256 = source.sha256 or (download_record(archive) or {}).get("sha256") or sha256_file(archive)
    if source.sha256 is None:
        log.info("%s: every entry's CRC checked; its sha256 is %s (set %s.sha256 to it to pin this exact file)",
                 ARCHIVE, archive_sha256, PARAM)
    extracted = ensure_extracted(archive, raw_dir / "extracted", archive_sha256, limits)
    rows = image_rows(raw_dir, extracted / TOP)
    write_raw_manifest(raw_dir, rows)
    return summary(rows, archive, archive_sha256)


def image_rows(raw_dir: Path, top: Path) -> list[dict]:
    """One row per photo under ``top/<split>/<cats|dogs>/``, label and split from the folders.

    Anything else is not an item: the zip's script (vectorize.py), and the __MACOSX folder, ``._*`` resource
    forks and .DS_Store files that archives made on a Mac carry.
    """
    rows = []
    for split in SPLITS:
        for folder, label in FOLDER_LABELS.items():
            images = top / split / folder
            if not images.is_dir():
                raise SourceUnavailable(f"{images} is missing: the archive is not Google's {ARCHIVE} "
                                        f"(expected {TOP}/{{{','.join(SPLITS)}}}/{{{','.join(FOLDER_LABELS)}}}/)")
            rows += [file_row(raw_dir, path, split, label) for path in sorted(images.iterdir()) if is_image(path)]
    return rows
