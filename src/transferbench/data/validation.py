"""Validating a prepared dataset with great-expectations before anything trains on it (stage `validate@<dataset>`).

Writes a report folder, ``reports/<dataset>/validation/`` in the pipeline: summary.json (deterministic, what
training depends on), results.json (GX's full results) and data_docs/ (GX's HTML). :func:`finish` raises
:class:`ValidationFailed` when an expectation fails, so the stage exits 1 and DVC stops before training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import mmap
import os
import shutil
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
import numpy as np
import pandas as pd
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from transferbench.core import paths
from transferbench.core.errors import BadInput
from transferbench.core.files import read_json, replace_dir, temp_dir, write_json
from transferbench.core.inputs import load_array, missing
from transferbench.data.datasets import DATASETS, prepared_by, read_manifest
from transferbench.data.expectations import FRAMES, build_suites

DOCS_SITE = "local"
EXAMPLES = 5            # bad values quoted per failed expectation
CHUNK = 256             # images per stats chunk: ~10 MB at 80x160x3, so memory stays flat
# Kwargs that say where an expectation looks; the others say what it expects.
_WHERE_KEYS = ("column", "column_A", "column_B", "column_list", "row_condition", "condition_parser")

log = logging.getLogger(__name__)


class ValidationFailed(BadInput):
    """An expectation failed on the prepared data; each failure was logged, the message says where to look."""


# ---- frames -----------------------------------------------------------------------------------

def image_stats(images: np.ndarray, chunk: int = CHUNK, workers: int | None = None) -> pd.DataFrame:
    """Per-image pixel mean, std and sha256 of the bytes, streamed through memory in chunks."""
    n = len(images)
    size = int(np.prod(images.shape[1:], dtype=np.int64))
    if not workers:
        cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
        workers = min(8, len(cores))

    def one_chunk(start: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        block = np.ascontiguousarray(images[start:start + chunk]).reshape(-1, size)
        if block.dtype == np.uint8:
            # Exact integer sums are ~10x faster than float and make a constant image's std exactly 0;
            # uint32 holds a sum of squares up to 66,000 pixels x 255**2.
            acc = np.uint32 if size * 255 * 255 < 2**32 else np.uint64
            total = block.sum(axis=1, dtype=acc).astype(np.int64)
            squares = np.einsum("ij,ij->i", block, block, dtype=acc).astype(np.int64)
            mean = total / size
            std = np.sqrt((size * squares - total * total) / float(size) ** 2)
        else:  # wrong dtype: the dtype expectation fails, but the stats still describe the data
            values = block.astype(np.float64)
            mean, std = values.mean(axis=1), values.std(axis=1)
        # hashlib releases the GIL on large buffers, so threads hash and sum in parallel.
        hashes = [hashlib.sha256(row.data).hexdigest() for row in block]  # .data: the row's bytes, not copied
        _unmap(images, start, start + len(block))
        return mean, std, hashes

    with ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(one_chunk, range(0, n, chunk)))
    return pd.DataFrame({
        "mean": np.concatenate([p[0] for p in parts]) if parts else np.zeros(0),
        "std": np.concatenate([p[1] for p in parts]) if parts else np.zeros(0),
        "sha256": [h for p in parts for h in p[2]],
    })


def _unmap(images: np.ndarray, start: int, stop: int) -> None:
    """Drop images[start:stop]'s pages from a read-only memmap once read, so RSS stays flat.

    Mapped pages count as the process's memory until unmapped: without this a 7.7 GB split shows
    7.7 GB resident. The data stays in the page cache; touching it again just maps it back.
    """
    if not isinstance(images, np.memmap):
        return
    mm: mmap.mmap | None = getattr(images, "_mmap", None)  # np.memmap's mmap object, mapped from an aligned offset
    # Only a whole read-only map as np.load returns it: a slice's offset is its parent's.
    if mm is None or images.base is not mm or images.mode != "r" or not hasattr(mm, "madvise"):
        return
    row = images.strides[0]
    first = images.offset % mmap.ALLOCATIONGRANULARITY + start * row
    lo = -(-first // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages inside the range only
    hi = (first + (stop - start) * row) // mmap.PAGESIZE * mmap.PAGESIZE
    if hi > lo:
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def _row_ids(split: str, n: int) -> pd.Index:
    # GX reports unexpected rows by index, so "train/17" says where to look.
    return pd.Index([f"{split}/{i}" for i in range(n)], dtype=object)


def read_frames(prepared_dir: Path, made_by: str) -> dict[str, pd.DataFrame]:
    """The manifest, splits and images frames of the prepared data in ``prepared_dir`` (written by DVC stage
    ``made_by``, which errors about missing or truncated files name)."""
    manifests, splits, images = [], [], []
    for split in paths.SPLITS:
        folder = Path(prepared_dir) / split
        array = load_array(folder / "images.npy", made_by)
        if not (folder / "manifest.csv").is_file():
            raise missing(folder / "manifest.csv", made_by)
        manifest = read_manifest(folder / "manifest.csv").assign(split=split)
        manifest.index = _row_ids(split, len(manifest))
        manifests.append(manifest)
        n = len(array)
        dims = list(array.shape[1:4]) + [-1] * (4 - array.ndim)  # -1: the array lacks that dimension
        splits.append({"split": split, "rows": len(manifest), "images": n, "ndim": array.ndim,
                       "height": dims[0], "width": dims[1], "channels": dims[2], "dtype": str(array.dtype)})
        stats = image_stats(array)
        listed = manifest["sha256"].tolist() if "sha256" in manifest else []
        stats["manifest_sha256"] = (listed + [None] * n)[:n]  # None where the manifest is short
        stats.insert(0, "split", split)
        stats.index = _row_ids(split, n)
        images.append(stats)
    frames = {
        "manifest": pd.concat(manifests),
        "splits": pd.DataFrame(splits).set_axis(list(paths.SPLITS)),
        "images": pd.concat(images),
    }
    return {frame: frames[frame] for frame in FRAMES}


# ---- great-expectations ------------------------------------------------------------------------

def _context(docs_dir: Path) -> Any:
    # Ephemeral: nothing is written but the Data Docs site; analytics off (no network here).
    site = {"class_name": "SiteBuilder", "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}}
    project = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
                                analytics_enabled=False, progress_bars=ProgressBarsConfig(globally=False),
                                data_docs_sites={DOCS_SITE: site})
    return gx.get_context(mode="ephemeral", project_config=project)


def run_suites(dataset: str, suites: Mapping[str, Any], frames: Mapping[str, pd.DataFrame],
               docs_dir: Path) -> dict[str, Any]:
    """Validate each frame against its suite; build Data Docs in ``docs_dir``; return GX's results."""
    context = _context(docs_dir)
    source = context.data_sources.add_pandas(dataset)
    results = {}
    for frame, suite in suites.items():
        batch = source.add_dataframe_asset(frame).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite.name, data=batch, suite=context.suites.add(suite)))
        results[frame] = definition.run(
            batch_parameters={"dataframe": frames[frame]},
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20})
    context.build_data_docs(site_names=[DOCS_SITE])
    return results


# ---- summary -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Summary:
    """What summary.json holds: overall success and one entry per expectation, in suite order."""

    dataset: str
    success: bool
    expectations: list[dict]
    # images per split and class, for datasets with classes: reported, not judged (reference study 000's pets are 1:2:2)
    class_balance: dict | None = None

    def failed(self) -> list[dict]:
        """The entries of the expectations that failed."""
        return [e for e in self.expectations if not e["success"]]

    def to_dict(self) -> dict:
        """summary.json's content."""
        return {"dataset": self.dataset, "success": self.success,
                "statistics": {"evaluated": len(self.expectations),
                               "unsuccessful": len(self.failed())},
                **({"class_balance": self.class_balance} if self.class_balance is not None else {}),
                "expectations": self.expectations}


def _plain(obj: Any, short: bool = False) -> Any:
    """JSON-safe copy (NaN -> null); ``short`` rounds floats and clips long strings such as hashes."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v, short) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, short) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        return float(f"{obj:.6g}") if short else obj
    if isinstance(obj, str) and short and len(obj) > 24:
        return obj[:12] + "..."
    return obj


def _condition(value: Any) -> Any:
    if isinstance(value, Mapping) and value.get("type") == "comparison":
        return f"{value['column']['name']} {value['operator']} {value['parameter']!r}"
    return value


def _observed(result: Any) -> Any:
    info = result.exception_info or {}
    # GX nests exception details under metric ids when a metric (not the expectation) failed.
    errors = [info] if "raised_exception" in info else list(info.values())
    for error in errors:
        if isinstance(error, Mapping) and error.get("raised_exception"):
            return {"error": str(error.get("exception_message")).splitlines()[0]}
    found = result.result or {}
    if "observed_value" in found:
        return _plain(found["observed_value"], short=True)
    if "unexpected_count" in found:
        examples = []
        for value in found.get("partial_unexpected_list") or []:
            if value not in examples:
                examples.append(value)
        observed = {"unexpected": found["unexpected_count"], "of": found.get("element_count")}
        if found["unexpected_count"]:
            observed.update(examples=examples[:EXAMPLES],
                            at=(found.get("partial_unexpected_index_list") or [])[:EXAMPLES])
        return _plain(observed, short=True)
    return None


def summarize(dataset: str, suites: Mapping[str, Any], results: Mapping[str, Any]) -> Summary:
    """The deterministic digest of GX's results: no run ids, times or batch ids."""
    entries = []
    for frame, suite in suites.items():
        order = {e.id: i for i, e in enumerate(suite.expectations)}
        for result in sorted(results[frame].results, key=lambda r: order.get(r.expectation_config.id, len(order))):
            cfg = result.expectation_config
            kwargs = {k: _condition(v) for k, v in cfg.kwargs.items() if k != "batch_id"}
            entries.append({"suite": frame, "type": cfg.type, "check": (cfg.meta or {}).get("check", cfg.type),
                            "kwargs": _plain(kwargs), "success": bool(result.success),
                            "observed": _observed(result)})
    return Summary(dataset, all(e["success"] for e in entries), entries)


def failure_lines(summary: Summary) -> list[str]:
    """One readable line per failed expectation: what, where, expected vs observed, examples."""
    lines = []
    for e in summary.failed():
        where = ", ".join(f"{k}={v}" if k != "row_condition" else str(v)
                          for k, v in e["kwargs"].items() if k in _WHERE_KEYS and k != "condition_parser")
        expected = ", ".join(f"{k}={v!r}" for k, v in e["kwargs"].items() if k not in _WHERE_KEYS)
        observed = e["observed"]
        if isinstance(observed, Mapping) and "unexpected" in observed:
            observed = (f"{observed['unexpected']} of {observed['of']} rows unexpected, "
                        f"e.g. {observed['examples']} at {observed['at']}")
        expected = f"; expected {expected}" if expected else ""
        lines.append(f"FAILED {e['check']} [{e['suite']}: {e['type']}({where})]{expected}; observed {observed}")
    return lines


def class_balance(manifest: pd.DataFrame) -> dict:
    """{split: {label: images}} with every split's labels sorted, for summary.json and the console."""
    counts = manifest.groupby(["split", "label"]).size()
    return {split: {label: int(n) for label, n in counts.xs(split).sort_index().items()}
            for split in paths.SPLITS if split in counts.index.get_level_values(0)}


# ---- the stage ---------------------------------------------------------------------------------

def validate(dataset: str, prepared_dir: Path, values: Any, report_dir: Path) -> Summary:
    """Validate ``prepared_dir`` against ``values`` (the dataset's params); replace ``report_dir``."""
    meta_path = Path(prepared_dir) / "meta.json"
    meta = read_json(meta_path) if meta_path.exists() else {}
    suites = build_suites(dataset, values, meta)  # before reading images: an unknown dataset fails at once
    frames = read_frames(Path(prepared_dir), prepared_by(dataset))
    report_dir = Path(report_dir)
    # Build the whole report beside the old one and swap it in: never a mix of two runs.
    work = temp_dir(report_dir)
    try:
        results = run_suites(dataset, suites, frames, work / "data_docs")
        summary = summarize(dataset, suites, results)
        if DATASETS.get(dataset).classes:
            summary = dataclasses.replace(summary, class_balance=class_balance(frames["manifest"]))
        write_json(work / "summary.json", summary.to_dict())
        write_json(work / "results.json", {frame: _plain(r.to_json_dict()) for frame, r in results.items()})
        replace_dir(work, report_dir)
    finally:
        if work.exists():
            shutil.rmtree(work)
    return summary


def finish(summary: Summary, report_dir: Path) -> None:
    """Log the outcome; :class:`ValidationFailed` when anything failed, after a line per failure."""
    n = len(summary.expectations)
    if summary.class_balance:
        for split, counts in summary.class_balance.items():
            total = sum(counts.values())
            shares = ", ".join(f"{label} {n:,} ({n / total:.0%})" for label, n in counts.items())
            log.info("%s %s: %s", summary.dataset, split, shares)
    if summary.success:
        log.info("%s: all %d expectations passed; reports in %s", summary.dataset, n, report_dir)
        return
    for line in failure_lines(summary):
        log.error("%s", line)
    raise ValidationFailed(f"{summary.dataset}: {len(summary.failed())} of {n} expectations FAILED (listed above); "
                           f"Data Docs: {Path(report_dir) / 'data_docs' / 'index.html'}")
