"""Rendering the seeded CAPTCHA dataset into a prepared folder, on every core, resumably (stage `generate_captcha`).

Work happens in tmp/generate_captcha/<fingerprint>/: each finished chunk leaves a marker there, so
a killed run resumes where it stopped. The finished folder replaces the output in one move. A stopped
run's folder is reused by the next run with the same params; the next run with other params deletes it,
saying how much that frees (it holds gigabytes at full size).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferbench.config.disk import allocated, check_fits
from transferbench.config.sections import integer
from transferbench.core.files import (
    create_zeros_npy,
    open_work_dir,
    read_json,
    replace_dir,
    size_text,
    write_json,
    write_text,
)
from transferbench.core.inputs import shown
from transferbench.core.parallel import cpu_count, map_chunks
from transferbench.core.progress import Progress
from transferbench.data import captcha

if TYPE_CHECKING:
    from transferbench.data.datasets import CaptchaParams

log = logging.getLogger(__name__)
DATASET = "captcha"
CHUNK_SIZE = 256  # images per task: small enough to lose little on a kill, large enough to amortise IPC


def fingerprint(values: Any, seed: int) -> str:
    """Short hash of everything the output bytes depend on (not ``workers``: it changes only the speed)."""
    return hashlib.sha256(json.dumps(_recipe(values, seed), sort_keys=True).encode()).hexdigest()[:12]


def _recipe(values: Any, seed: int) -> dict:
    section = _section(values)
    return {"captcha": section.model_dump(mode="json", exclude={"workers"}), "seed": seed,
            "generator": captcha.generator(section.style)}




def _section(values: Any) -> CaptchaParams:
    """The typed ``captcha`` section (checked, if given as a mapping)."""
    from transferbench.data.datasets import DATASETS, CaptchaParams  # pandas: not in the workers' imports

    section = DATASETS.get(DATASET).section(values, DATASET)
    assert isinstance(section, CaptchaParams)
    return section


def generate(out_dir: Path, work_dir: Path, values: Any, seed: int, workers: int,
             *, chunk_size: int = CHUNK_SIZE, free_bytes: int | None = None) -> None:
    """Write the dataset for the params ``captcha`` section ``values`` to ``out_dir``, resuming from ``work_dir``.

    Refuses before any work if the images would not fit on the disk (``free_bytes``: its free space).
    """
    values = _section(values)
    integer("seed", seed, 0, 2**32 - 1)
    integer("chunk_size", chunk_size, 1)
    counts = {"train": values.train, "validation": values.validation, "test": values.test}
    check_fits(DATASET, counts, values.image_shape, Path(work_dir), free=free_bytes)
    captcha.check_captcha_version()
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    workers = workers or cpu_count()
    started = time.perf_counter()

    open_work_dir(work_dir, {**_recipe(values, seed), "chunk_size": chunk_size})
    output, done = work_dir / "output", work_dir / "done"
    labels = captcha.draw_labels(seed, counts, values.alphabet, values.length,
                                 captcha.symbol_weights(values.alphabet, values.style))
    shape = values.image_shape

    chunks = _plan_chunks(output, done, labels, shape, seed, chunk_size, values.style)
    todo = [c for c in chunks if _read_marker(done, c) is None]
    total = sum(counts.values())
    workers = max(1, min(workers, len(todo)))
    log.info("%s CAPTCHAs (%s), %sx%s, style %s, seed %s -> %s", f"{total:,}",
             ", ".join(f"{s} {n:,}" for s, n in counts.items()), values.width, values.height, values.style, seed,
             shown(out_dir))
    if len(todo) < len(chunks):
        log.info("resuming %s: %d of %d chunks already done", shown(work_dir), len(chunks) - len(todo), len(chunks))

    remaining = sum(len(c.labels) for c in todo)
    with Progress("rendering", total, initial=total - remaining) as bar:
        for chunk, hashes in map_chunks(captcha.render_chunk, todo, workers):
            write_json(_marker_path(done, chunk), hashes)
            bar.update(len(chunk.labels))

    for split in counts:
        hashes = [h for c in chunks if c.split == split for h in _finished_hashes(done, c)]
        write_text(output / split / "manifest.csv", _manifest(labels[split], hashes))
    write_json(output / "meta.json", {
        "dataset": DATASET, "image_shape": list(shape), "splits": counts,
        "alphabet": values.alphabet, "length": values.length, "seed": seed, "style": values.style,
        "generator": captcha.generator(values.style),
    })
    # The only step that touches out_dir: before it the old output (if any) is untouched.
    replace_dir(output, out_dir)
    shutil.rmtree(work_dir)
    elapsed = time.perf_counter() - started
    log.info("wrote %s in %.1f s (%s rendered/s on %d worker%s)", shown(out_dir), elapsed,
             f"{remaining / elapsed:,.0f}", workers, "s" * (workers > 1))




def _plan_chunks(output: Path, done: Path, labels: dict[str, list[str]], shape: tuple[int, int, int], seed: int,
                 chunk_size: int, style: captcha.Style) -> list[captcha.Chunk]:
    """Every chunk of every split, creating each split's zero-filled images.npy if it is missing."""
    chunks = []
    for split, split_labels in labels.items():
        images_path = output / split / "images.npy"
        if not images_path.exists():
            _create_images(images_path, (len(split_labels), *shape), stale_markers=done.glob(f"{split}-*.json"))
        for start in range(0, len(split_labels), chunk_size):
            chunks.append(captcha.Chunk(str(images_path), split, start, tuple(split_labels[start:start + chunk_size]),
                                        seed, width=shape[1], height=shape[0], style=style))
    return chunks


def _create_images(path: Path, shape: tuple[int, ...], stale_markers: Iterator[Path]) -> None:
    # Markers describe rows of a file that is gone; a new file means every chunk of the split is redone.
    for marker in stale_markers:
        marker.unlink()
    create_zeros_npy(path, shape)


def _marker_path(done: Path, chunk: captcha.Chunk) -> Path:
    return done / f"{chunk.split}-{chunk.start:09d}-{chunk.end:09d}.json"


def _read_marker(done: Path, chunk: captcha.Chunk) -> list[str] | None:
    """The chunk's image hashes if it finished in an earlier (or this) run, else None."""
    path = _marker_path(done, chunk)
    if not path.exists():
        return None
    hashes = read_json(path)
    return hashes if len(hashes) == len(chunk.labels) else None


def _finished_hashes(done: Path, chunk: captcha.Chunk) -> list[str]:
    """The image hashes of a chunk once rendering is over, when every chunk has its marker."""
    hashes = _read_marker(done, chunk)
    assert hashes is not None, f"{_marker_path(done, chunk)}: no marker after every chunk was rendered"
    return hashes


def _manifest(labels: list[str], hashes: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")  # one fixed dialect: identical bytes on every OS
    writer.writerow(["label", "sha256"])
    writer.writerows(zip(labels, hashes, strict=True))
    return buffer.getvalue()


def remove_other_work_dirs(root: Path, keep: str) -> int:
    """Delete every work folder under ``root`` but ``keep``: partial runs of other params can never be
    resumed by this one, and may hold gigabytes. Returns the bytes freed; each folder is logged with its size."""
    freed = 0
    if root.exists():
        for stale in sorted(p for p in root.iterdir() if p.is_dir() and p.name != keep):
            size = allocated(stale)
            shutil.rmtree(stale)
            freed += size
            log.info("removed a stopped run's partial work for other params: %s (freed %s)", shown(stale),
                     size_text(size))
    return freed


def kept_work(work_dir: Path) -> str:
    """What a stopped run leaves: the folder and its size, for the line that says so."""
    return f"{shown(work_dir)} ({size_text(allocated(work_dir))})"
