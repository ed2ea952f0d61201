"""Decoding a fetched photo dataset once into data/prepared/<dataset>: checked, resized, resumable.

Stage `prepare@<dataset>` (stages/prepare.py) reads data/raw/<dataset>/ (layout in transferbench.data.raw),
gives each item its split with the dataset's registry entry, decodes every image on ``workers`` processes
(transferbench.data.images) and writes the prepared layout (transferbench.data.datasets) plus
quarantine.csv, one row per item dropped and why. Work happens in tmp/prepare/<dataset>-<fingerprint>/,
so a killed run resumes where it stopped:

    plan.json            what the work belongs to; another plan there means start over
    done/<chunk>.json    one record per item of a decoded chunk
    pixels/<chunk>.npy   the chunk's usable images, until copied into the output (then deleted)
    copied/<chunk>       the chunk's kept images are in output/<split>/images.npy
    output/              the finished folder, moved onto data/prepared/<dataset> in one step

Disk stays near one copy of the dataset (chunks are deleted as they are copied) and memory near one
chunk per process: CIFAR-10 at 224x224 is 9 GB of pixels.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import io
import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from PIL import Image, features

from transferbench.config.disk import check_fits
from transferbench.config.sections import integer
from transferbench.core import paths, progress
from transferbench.core.errors import BadInput, ConfigError, MissingInput
from transferbench.core.files import (
    allocate,
    create_zeros_npy,
    open_work_dir,
    read_json,
    replace_dir,
    write_json,
    write_text,
)
from transferbench.core.parallel import cpu_count, map_chunks
from transferbench.data import images
from transferbench.data.datasets import DATASETS, DatasetParams, DatasetSpec
from transferbench.data.images import MAX_PIXELS, Chunk
from transferbench.data.raw import read_raw_manifest, sha256_file
from transferbench.data.splits import UNUSED

log = logging.getLogger(__name__)

# Items per task: at most 256 (little lost on a kill, 38 MB of pixels at 224x224), at least 8 (IPC
# and markers amortised), and otherwise 1/64 of the dataset, so small datasets keep every core busy.
# It depends on the item count only, never on `workers`: a resumed run finds the same chunks.
CHUNK_SIZE = 256
MIN_CHUNK_SIZE = 8
# Bump when a change to src/transferbench/data/images.py changes output bytes, so old partial work is not reused.
RECIPE_VERSION = 2  # 2: records carry each image's real format
# Params keys that change how fast or how strictly, not which bytes: left out of the fingerprint.
NOT_IN_OUTPUT = ("workers", "tolerance", "source")
# Where an image found in two splits stays: the held-out split wins, so no evaluation image is lost.
PRIORITY = {"test": 0, "validation": 1, "train": 2}
MANIFEST_COLUMNS = ["label", "sha256", "key", "source_sha256", "orig_width", "orig_height", "converted", "format",
                    "format_note"]
QUARANTINE_COLUMNS = ["key", "split", "label", "reason"]

Progress = Callable[[str, Chunk], None]  # (step: 'decoded' | 'copied', chunk), after the step is on disk


# ---- inputs --------------------------------------------------------------------------------------

def photo_spec(name: str) -> DatasetSpec:
    """The registry entry of a fetched photo dataset; errors name the datasets this stage prepares."""
    prepared_here = [n for n in DATASETS.names() if DATASETS.get(n).source]
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; datasets to prepare: {', '.join(prepared_here)}")
    spec = DATASETS.get(name)
    if not spec.source:
        raise ConfigError(f"{name} is generated, not fetched and prepared (its stage writes data/prepared/{name} "
                          f"itself); datasets to prepare: {', '.join(prepared_here)}")
    return spec


def source_loader(spec: DatasetSpec) -> str | None:
    """The module whose ``load(raw_dir, key)`` reads the source's items, or None: items are files."""
    module = f"transferbench.data.sources.{spec.source}"
    return module if callable(getattr(importlib.import_module(module), "load", None)) else None


def read_items(name: str, spec: DatasetSpec, values: Any, seed: int,
               raw_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(raw manifest, the assigned items: split, key, label, source_sha256, in split then key order)."""
    if not (Path(raw_dir) / "manifest.csv").is_file():
        raise MissingInput(f"{Path(raw_dir) / 'manifest.csv'} is missing: run `dvc repro fetch@{name}` first")
    raw = read_raw_manifest(raw_dir)
    items = raw[raw["status"] == "ok"].reset_index(drop=True)
    _check_raw_items(name, spec, items)
    # Every fetched dataset (photo_spec) registers how its items are split: see datasets._photo.
    assert spec.assign_splits is not None, f"{name} has a source but no assign_splits"
    split = pd.Series(spec.assign_splits(items, values, seed)).reindex(items.index)  # NaN where it gave none
    bad = sorted({str(s) for s in split} - {*paths.SPLITS, UNUSED})
    if bad:
        raise ValueError(f"{name}'s assign_splits gave split {bad[0]!r}; accepted: {', '.join(paths.SPLITS)} or ''")
    items = items.assign(split=split, source_sha256=items["sha256"])
    items = items[items["split"] != UNUSED]
    items = items.assign(order=items["split"].map({s: i for i, s in enumerate(paths.SPLITS)}))
    items = items.sort_values(["order", "key"], kind="stable").reset_index(drop=True)
    return raw, items[["split", "key", "label", "source_sha256"]]


def _check_raw_items(name: str, spec: DatasetSpec, items: pd.DataFrame) -> None:
    if items.empty:
        raise BadInput(f"{name}'s raw manifest has no item with status ok: rerun `dvc repro fetch@{name}`")
    unknown = sorted(set(items["label"]) - set(spec.classes))
    if unknown:
        raise BadInput(f"{name}'s raw manifest has label {unknown[0]!r}; classes: {', '.join(spec.classes)}")
    repeated = items["key"][items["key"].duplicated()]
    if len(repeated):
        raise BadInput(f"{name}'s raw manifest lists key {repeated.iloc[0]!r} twice; keys must be unique")


def fingerprint(recipe: Mapping[str, Any]) -> str:
    """Short hash of everything the output bytes depend on."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def make_recipe(name: str, values: DatasetParams, seed: int, raw_dir: Path, loader: str | None,
                max_pixels: int) -> dict:
    return {"dataset": name, "seed": seed, "max_pixels": max_pixels, "loader": loader,
            "values": values.model_dump(mode="json", exclude=set(NOT_IN_OUTPUT)),
            "raw_manifest": sha256_file(Path(raw_dir) / "manifest.csv"),
            "decoder": decoder(), "recipe_version": RECIPE_VERSION}


def decoder() -> str:
    """The library versions the output bytes depend on."""
    return f"Pillow {Image.__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}"




# ---- the stage -------------------------------------------------------------------------------------

def prepare(name: str, values: Any, seed: int, raw_dir: Path, out_dir: Path, work_root: Path, *,
            loader: str | None, workers: int = 0, chunk_size: int | None = None, max_pixels: int = MAX_PIXELS,
            on_progress: Progress | None = None, free_bytes: int | None = None) -> dict:
    """Prepare ``raw_dir`` into ``out_dir`` for params section ``values``; return the report.

    Partial work lives in ``work_root/<name>-<fingerprint>``. ``loader`` is :func:`source_loader`'s
    answer; ``workers`` 0 means every core; ``chunk_size`` None means :func:`auto_chunk_size`;
    ``on_progress`` is called after each chunk's step. Refuses before any work if the images would
    not fit on the disk (``free_bytes``: its free space).
    """
    spec = photo_spec(name)
    values = spec.section(values, name)
    integer("seed", seed, 0, 2**32 - 1)
    integer("workers", workers, 0)
    if chunk_size is not None:
        integer("chunk_size", chunk_size, 1)
    integer("max_pixels", max_pixels, 1)
    raw, items = read_items(name, spec, values, seed, raw_dir)
    chunk_size = chunk_size or auto_chunk_size(len(items))
    out_dir, shape = Path(out_dir), values.image_shape
    recipe = make_recipe(name, values, seed, raw_dir, loader, max_pixels)
    work_dir = Path(work_root) / f"{name}-{fingerprint(recipe)}"
    counts = {split: int((items["split"] == split).sum()) for split in paths.SPLITS}
    check_fits(name, counts, shape, work_dir, free=free_bytes)
    started = time.perf_counter()

    _remove_other_work_dirs(Path(work_root), name, keep=work_dir.name)
    open_work_dir(work_dir, {**recipe, "chunk_size": chunk_size})
    chunks = plan_chunks(items, work_dir, str(raw_dir), loader, shape, chunk_size, max_pixels)
    _forget_lost_work(chunks, work_dir)
    todo = [c for c in chunks if not _marker(work_dir, c).exists()]
    workers = max(1, min(workers or cpu_count(), len(todo) or 1))
    log.info("prepare %s: %s images (%s) -> %dx%d, %d worker%s", name, f"{len(items):,}", _counts_text(items),
             shape[1], shape[0], workers, "s" * (workers > 1))
    if len(todo) < len(chunks):
        log.info("resuming %s: %d of %d chunks already decoded", work_dir, len(chunks) - len(todo), len(chunks))
    decode_started = time.perf_counter()
    _decode_all(todo, workers, work_dir, len(items), on_progress)
    decode_seconds = time.perf_counter() - decode_started

    table = read_records(items, chunks, work_dir)
    table["drop"] = drop_reasons(table)
    _copy_kept(chunks, table, work_dir, shape, on_progress)
    write_outputs(work_dir / "output", name, spec, table, shape, seed)
    # The only step that touches out_dir: before it the old output (if any) is untouched.
    replace_dir(work_dir / "output", out_dir)
    shutil.rmtree(work_dir)
    timing = _timing(sum(len(c.keys) for c in todo), decode_seconds, workers, time.perf_counter() - started)
    return build_report(name, spec, raw, table, shape, seed, timing)


def _timing(decoded: int, decode_seconds: float, workers: int, total_seconds: float) -> dict:
    # Images decoded by this run only: a resumed run's rate says nothing about the chunks found done.
    rate = round(decoded / decode_seconds, 1) if decoded and decode_seconds > 0 else None
    return {"decoded": decoded, "decode_seconds": round(decode_seconds, 3), "images_per_second": rate,
            "workers": workers, "total_seconds": round(total_seconds, 3)}


def auto_chunk_size(n_items: int) -> int:
    """Items per chunk for a dataset of ``n_items`` (see CHUNK_SIZE)."""
    return min(CHUNK_SIZE, max(MIN_CHUNK_SIZE, -(-n_items // 64)))


def plan_chunks(items: pd.DataFrame, work_dir: Path, raw_dir: str, loader: str | None,
                shape: tuple[int, int, int], chunk_size: int, max_pixels: int) -> list[Chunk]:
    """Consecutive runs of ``chunk_size`` items of one split, in the items' order."""
    chunks = []
    for split in paths.SPLITS:
        keys = items.loc[items["split"] == split, "key"].tolist()
        for start in range(0, len(keys), chunk_size):
            part = tuple(keys[start:start + chunk_size])
            pixels = work_dir / "pixels" / f"{images.chunk_name(split, start, start + len(part))}.npy"
            chunks.append(Chunk(split, start, part, raw_dir, str(pixels), loader,
                                height=shape[0], width=shape[1], max_pixels=max_pixels))
    return chunks


# ---- work dir --------------------------------------------------------------------------------------

def _marker(work_dir: Path, chunk: Chunk) -> Path:
    return work_dir / "done" / f"{chunk.name}.json"


def _copied(work_dir: Path, chunk: Chunk) -> Path:
    return work_dir / "copied" / chunk.name


def _images_path(work_dir: Path, split: str) -> Path:
    return work_dir / "output" / split / "images.npy"


def _forget_lost_work(chunks: list[Chunk], work_dir: Path) -> None:
    """Drop markers whose pixels are gone (a split's array deleted by hand), so those chunks are redone."""
    for chunk in chunks:
        if _copied(work_dir, chunk).exists() and not _images_path(work_dir, chunk.split).exists():
            _copied(work_dir, chunk).unlink()
        if not Path(chunk.pixels_path).exists() and not _copied(work_dir, chunk).exists():
            _marker(work_dir, chunk).unlink(missing_ok=True)


# ---- decoding --------------------------------------------------------------------------------------

def _decode_all(todo: list[Chunk], workers: int, work_dir: Path, total: int, on_progress: Progress | None) -> None:
    """Decode the chunks, recording each as done once its pixels are on disk."""
    remaining = sum(len(c.keys) for c in todo)
    with progress.Progress("decoding", total, initial=total - remaining) as bar:
        for chunk, records in map_chunks(images.decode_chunk, todo, workers):
            write_json(_marker(work_dir, chunk), records)
            bar.update(len(chunk.keys))
            if on_progress:
                on_progress("decoded", chunk)


def read_records(items: pd.DataFrame, chunks: list[Chunk], work_dir: Path) -> pd.DataFrame:
    """The items with their decode records: sha256 etc., reason ('' if usable), chunk and row in its file."""
    rows = []
    for chunk in chunks:
        records = read_json(_marker(work_dir, chunk))
        if [r["key"] for r in records] != list(chunk.keys):
            raise RuntimeError(f"{_marker(work_dir, chunk)} does not match its chunk; delete {work_dir} and rerun")
        usable = 0
        for record in records:
            rows.append({"sha256": "", "orig_width": 0, "orig_height": 0, "converted": "", "format": "",
                         "format_note": "", "reason": "", **record, "chunk": chunk.name,
                         "row": usable if "reason" not in record else -1})
            usable += "reason" not in record
    records = pd.DataFrame(rows, columns=["key", "sha256", "orig_width", "orig_height", "converted", "format",
                                          "format_note", "reason", "chunk", "row"])
    return pd.concat([items, records.drop(columns="key")], axis=1)


def drop_reasons(table: pd.DataFrame) -> pd.Series:
    """Why each item is dropped ('' = kept): unusable, else a label conflict, else a leak across splits,
    else a duplicate.

    Identical images under two labels are all dropped: neither label can be trusted. Of identical
    images under one label the first in (test, validation, train; key) order is kept: a copy in
    another split is a leak, a copy in the same split a duplicate.
    """
    drop = table["reason"].copy()
    conflicts = label_conflicts(table[drop == ""])
    drop[conflicts.index] = conflicts
    usable = table[drop == ""]
    usable = usable.assign(rank=usable["split"].map(PRIORITY)).sort_values(["rank", "key"], kind="stable")
    keepers = usable[~usable["sha256"].duplicated()].set_index("sha256")
    copies = usable[usable["sha256"].duplicated()]
    for index, split, sha in zip(copies.index, copies["split"], copies["sha256"], strict=True):
        # Both columns hold str; pandas-stubs type a cell as any scalar.
        kept_split, kept_key = cast(str, keepers.at[sha, "split"]), cast(str, keepers.at[sha, "key"])
        drop[index] = (f"duplicate: same pixels as {kept_key}" if split == kept_split
                       else f"leak: also in {kept_split} as {kept_key}")
    return drop


def label_conflicts(usable: pd.DataFrame) -> pd.Series:
    """'label conflict: ...' for every usable item whose pixels another item has under another label."""
    labels = usable.groupby("sha256")["label"].nunique()
    conflicted = usable[usable["sha256"].map(labels) > 1].sort_values("key", kind="stable")
    reasons = {}
    for index, label, sha in zip(conflicted.index, conflicted["label"], conflicted["sha256"], strict=True):
        other = conflicted[(conflicted["sha256"] == sha) & (conflicted["label"] != label)].iloc[0]
        reasons[index] = f"label conflict: {label} here, {other['label']} as {other['key']}"
    return pd.Series(reasons, dtype=object)


# ---- output ----------------------------------------------------------------------------------------

def _copy_kept(chunks: list[Chunk], table: pd.DataFrame, work_dir: Path, shape: tuple[int, int, int],
               on_progress: Progress | None) -> None:
    """Copy each chunk's kept images into its split's array (compact, in key order), then delete the chunk."""
    kept = table[table["drop"] == ""]
    for split in paths.SPLITS:
        _create_images(_images_path(work_dir, split), (int((kept["split"] == split).sum()), *shape))
    rows_of = {chunk: rows.to_numpy() for chunk, rows in kept.groupby("chunk", sort=False)["row"]}
    offsets = {split: 0 for split in paths.SPLITS}
    for chunk in chunks:
        rows = rows_of.get(chunk.name, np.zeros(0, dtype=np.int64))
        start, offsets[chunk.split] = offsets[chunk.split], offsets[chunk.split] + len(rows)
        if _copied(work_dir, chunk).exists():
            continue
        if len(rows):
            images_path = _images_path(work_dir, chunk.split)
            target = np.lib.format.open_memmap(images_path, mode="r+")
            # Reserved chunk by chunk, as each chunk's own file is deleted: the disk holds about one copy.
            row = target.strides[0]
            allocate(images_path, target.offset + start * row, len(rows) * row, name=images_path)
            target[start:start + len(rows)] = np.load(chunk.pixels_path, mmap_mode="r")[rows]
            # No flush (msync): pages written to a shared map outlive a killed process in the page
            # cache, and a power cut would also lose the unsynced markers; flushing cost 10 % here.
            del target
        write_text(_copied(work_dir, chunk), "")
        Path(chunk.pixels_path).unlink()
        if on_progress:
            on_progress("copied", chunk)


def _create_images(path: Path, shape: tuple[int, ...]) -> None:
    """A zero-filled uint8 array file of ``shape``, unless a finished one is already there."""
    if path.exists():
        found = np.load(path, mmap_mode="r").shape
        if found != shape:
            raise RuntimeError(f"{path} has shape {found}, the plan says {shape}; delete {path.parents[2]} and rerun")
        return
    create_zeros_npy(path, shape, reserve=False)  # _copy_kept reserves each chunk's rows before writing them


def write_outputs(output: Path, name: str, spec: DatasetSpec, table: pd.DataFrame, shape: tuple[int, int, int],
                  seed: int) -> None:
    """Each split's manifest.csv, quarantine.csv and meta.json beside the arrays."""
    kept, dropped = table[table["drop"] == ""], table[table["drop"] != ""]
    for split in paths.SPLITS:
        write_text(output / split / "manifest.csv", _csv(kept[kept["split"] == split], MANIFEST_COLUMNS))
    write_text(output / "quarantine.csv", _csv(dropped.assign(reason=dropped["drop"]), QUARANTINE_COLUMNS))
    write_json(output / "meta.json", {
        "dataset": name, "image_shape": list(shape), "classes": list(spec.classes), "seed": seed,
        "splits": {s: int((kept["split"] == s).sum()) for s in paths.SPLITS},
        "expected": {s: int((table["split"] == s).sum()) for s in paths.SPLITS},
        "decoder": decoder(),
    })


def _csv(frame: pd.DataFrame, columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")  # one fixed dialect: identical bytes on every OS
    writer.writerow(columns)
    writer.writerows(frame[columns].itertuples(index=False, name=None))
    return buffer.getvalue()


# ---- report ----------------------------------------------------------------------------------------

def build_report(name: str, spec: DatasetSpec, raw: pd.DataFrame, table: pd.DataFrame,
                 shape: tuple[int, int, int], seed: int, timing: Mapping[str, Any]) -> dict:
    """Counts per split and class, what was dropped and why, conversions, the reference study's counts, speed."""
    kind = table["drop"].str.split(":", n=1).str[0]
    kept = table[kind == ""]
    splits = {}
    for split in paths.SPLITS:
        mine = table["split"] == split
        splits[split] = {
            "expected": int(mine.sum()), "kept": int((kept["split"] == split).sum()),
            "classes": {c: int(((kept["split"] == split) & (kept["label"] == c)).sum()) for c in spec.classes},
            "dropped": _tally(kind[mine & (kind != "")]),
        }
    converted = kept["converted"].str.split("; ").explode()
    report = {
        "dataset": name, "seed": seed, "image_shape": list(shape), "splits": splits,
        "dropped": _tally(kind[kind != ""]), "duplicates": int((kind == "duplicate").sum()),
        "leaks": int((kind == "leak").sum()),
        "leak_examples": table.loc[kind == "leak", ["split", "key", "drop"]].head(20)
                         .rename(columns={"drop": "reason"}).to_dict("records"),
        "label_conflicts": int((kind == "label conflict").sum()),
        "label_conflict_examples": table.loc[kind == "label conflict", ["split", "key", "drop"]].head(20)
                                   .rename(columns={"drop": "reason"}).to_dict("records"),
        "formats": _tally(kept["format"]),
        "format_mismatches": int((kept["format_note"] != "").sum()),
        "format_mismatch_examples": kept.loc[kept["format_note"] != "", ["split", "key", "format_note"]].head(20)
                                    .rename(columns={"format_note": "note"}).to_dict("records"),
        "converted": _tally(converted[converted != ""]),
        "fetch": _fetch_counts(raw), "timing": dict(timing),
    }
    if spec.published_counts:
        report["published"] = _published(spec.published_counts, kept, raw)
    return report


def _tally(values: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(values.value_counts().items())}


def _fetch_counts(raw: pd.DataFrame) -> dict:
    """Items per status in the raw manifest, and the reasons for excluded and failed ones, per source split."""
    out: dict[str, Any] = {"status": _tally(raw["status"])}
    for status in ("excluded", "failed"):
        rows = raw[raw["status"] == status]
        out[status] = {s: _tally(rows.loc[rows["source_split"] == s, "reason"])
                       for s in sorted(set(rows["source_split"]))}
    return out


def _published(published_counts: Mapping[str, Mapping[str, int]], kept: pd.DataFrame, raw: pd.DataFrame) -> dict:
    """The reference study's images per split and class beside ours ('*' = all classes), and what the fetch left out.

    Where the reference study's rules differ from ours (pets: it kept images with two labels), the items the
    fetch excluded from that source split account for the difference.
    """
    out = {}
    for split, classes in published_counts.items():
        mine, source = kept[kept["split"] == split], raw[raw["source_split"] == split]
        out[split] = {
            "classes": {c: {"seed": n, "ours": int(len(mine) if c == "*" else (mine["label"] == c).sum())}
                        for c, n in classes.items()},
            "excluded_at_fetch": int((source["status"] == "excluded").sum()),
            "failed_at_fetch": int((source["status"] == "failed").sum()),
        }
    return out


def summary_lines(report: Mapping[str, Any], out_dir: Path) -> list[str]:
    """A short human summary of the report."""
    timing = report["timing"]
    speed = f"{timing['images_per_second']:,.0f} images/s" if timing["images_per_second"] else "nothing left to decode"
    lines = [f"prepare {report['dataset']}: wrote {out_dir} ({speed} on {timing['workers']} worker"
             f"{'s' * (timing['workers'] > 1)}, {timing['total_seconds']:.1f} s in all)",
             f"  {'split':10} {'expected':>9} {'kept':>9}  dropped"]
    for split, counts in report["splits"].items():
        dropped = ", ".join(f"{k} {v:,}" for k, v in counts["dropped"].items()) or "none"
        lines.append(f"  {split:10} {counts['expected']:>9,} {counts['kept']:>9,}  {dropped}")
    if report["label_conflicts"]:
        lines.append(f"  label conflicts (the same image under two labels, all copies dropped): "
                     f"{report['label_conflicts']:,}")
    if report["formats"]:
        lines.append("  formats: " + ", ".join(f"{k} {v:,}" for k, v in report["formats"].items()))
    if report["format_mismatches"]:
        lines.append(f"  kept, but named as another format (format_note in the manifests): "
                     f"{report['format_mismatches']:,}, e.g. {report['format_mismatch_examples'][0]['key']}")
    if report["converted"]:
        lines.append("  converted: " + ", ".join(f"{k} {v:,}" for k, v in report["converted"].items()))
    for split, seed in report.get("published", {}).items():
        lines.append(f"  reference study's {split}: " + ", ".join(f"{c} {v['seed']:,} (ours {v['ours']:,})"
                                                        for c, v in seed["classes"].items())
                     + f"; excluded at fetch {seed['excluded_at_fetch']:,}, failed {seed['failed_at_fetch']:,}")
    excluded: dict[str, int] = {}
    for reasons in report["fetch"]["excluded"].values():
        for reason, n in reasons.items():
            excluded[reason] = excluded.get(reason, 0) + n
    if excluded:
        lines.append("  excluded at fetch: " + ", ".join(f"{r or 'no reason given'} {n:,}"
                                                      for r, n in excluded.items()))
    if report["dropped"]:
        lines.append(f"  every dropped item and why: {out_dir / 'quarantine.csv'}")
    return lines


def _counts_text(items: pd.DataFrame) -> str:
    return ", ".join(f"{s} {int((items['split'] == s).sum()):,}" for s in paths.SPLITS)


# ---- partial work ---------------------------------------------------------------------------------

def _remove_other_work_dirs(root: Path, name: str, keep: str) -> None:
    # Partial runs of other inputs can never be resumed by this one and may hold gigabytes.
    mine = re.compile(rf"^{re.escape(name)}-[0-9a-f]{{12}}$")
    if root.exists():
        for stale in sorted(p for p in root.iterdir() if p.is_dir() and mine.match(p.name) and p.name != keep):
            log.info("removing partial run of other inputs: %s", stale)
            shutil.rmtree(stale)
