"""What every photo source leaves in data/raw/<dataset>/, and the small tools all sources share.

A source is a module ``transferbench.data.sources.<name>`` (named by its dataset's registry entry) with

    fetch(values, raw_dir, seed, limits) -> dict
        Download (or find already present and verified) everything into ``raw_dir``, unpacking archives
        within ``limits`` (params' ``extraction``, transferbench.config.extraction); write
        ``raw_dir/manifest.csv`` atomically; return counts for the fetch report. Resumable: a file
        already present with the recorded size and sha256 is never fetched again. An unreachable
        source raises :class:`SourceUnavailable` within seconds, saying what was tried and how to
        provide the data instead.
    load(raw_dir, key) -> bytes | numpy.ndarray          (optional)
        One item's encoded bytes, or a uint8 (H, W, 3) array for sources that ship pixels
        (CIFAR-10). Without it, ``key`` is a path relative to ``raw_dir`` and its bytes are read.

raw_dir/manifest.csv has one row per item the source knows of, failures included:

    key           path relative to raw_dir (or a source-specific id for non-file items)
    source_split  the split the source itself puts the item in (train, validation, test)
    label         class name, one of the dataset's ``classes``
    bytes         size of the stored file (0 for failures)
    sha256        of the stored file's bytes ('' for failures)
    status        ok | failed | excluded
    reason        why it failed or was excluded ('' for ok)

Sources may add columns after these. Raw data is never modified after it is verified.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import pandas as pd
import tenacity

from transferbench.core.errors import UserError
from transferbench.core.files import file_digest, write_json, write_text
from transferbench.core.redact import redact

REFUSED = "refused"
RAW_COLUMNS = ["key", "source_split", "label", "bytes", "sha256", "status", "reason"]
STATUSES = ("ok", "failed", "excluded")

T = TypeVar("T")
log = logging.getLogger(__name__)


class SourceUnavailable(UserError, RuntimeError):
    """A source could not be reached or gave bad data; the message says what was tried and what to do."""


def sha256_file(path: Path | str) -> str:
    """The sha256 a raw manifest records for a file."""
    return file_digest(path, "sha256")


def record_path(dest: Path) -> Path:
    """Where the key of the downloaded file ``dest`` is kept: address, size, ETag, Last-Modified, sha256."""
    return dest.with_name(dest.name + ".source.json")


def refuse(path: Path, name: str, reason: str, url: str | None = None) -> Path:
    """Move a file that failed its checks to ``refused/<name>.<sha256 prefix>`` beside it; return where.

    Kept, not deleted, so it can be looked at (``<that>.json`` says why and where it came from); out of the
    way, so the next address or the next run is not stopped by it.
    """
    digest = sha256_file(path)
    where = path.parent / REFUSED / f"{name}.{digest[:12]}"
    where.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, where)
    write_json(where.with_name(where.name + ".json"),
               {"file": name, "sha256": digest, "reason": redact(reason), "url": redact(url) if url else None})
    return where


def verified(path: Path, size: int | None = None, sha256: str | None = None) -> bool:
    """True when ``path`` exists with the given size and hash (each checked only if given)."""
    if not path.is_file():
        return False
    if size is not None and path.stat().st_size != size:
        return False
    return sha256 is None or sha256_file(path) == sha256


def retry(call: Callable[[], T], *, what: str, attempts: int = 5, base_delay: float = 0.5,
          retry_on: tuple[type[BaseException], ...] = (OSError,), sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()`` with exponential back-off and jitter; the last error is re-raised after ``attempts``.

    Each retry logs one warning naming ``what``; other exceptions than ``retry_on`` pass through at once.
    """
    def announce(state: tenacity.RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s: %s: %s; retry %d/%d in %.1f s", what, type(err).__name__, err, state.attempt_number,
                    attempts - 1, delay)

    # Full jitter (the n-th wait uniform in [0, base_delay * 2**(n-1)]) spreads many workers' retries, so
    # they do not hit a recovering server together.
    retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(attempts),
                                 wait=tenacity.wait_random_exponential(multiplier=base_delay),
                                 retry=tenacity.retry_if_exception_type(retry_on), before_sleep=announce,
                                 sleep=sleep, reraise=True)
    return retrying(call)


def raw_manifest(rows: Iterable[Mapping]) -> pd.DataFrame:
    """Rows -> a frame with RAW_COLUMNS first (extras after), sorted by key for stable bytes."""
    frame = pd.DataFrame(list(rows))
    for column in RAW_COLUMNS:
        if column not in frame:
            frame[column] = pd.Series(dtype=object)
    frame = frame[RAW_COLUMNS + [c for c in frame.columns if c not in RAW_COLUMNS]]
    bad = sorted(set(frame["status"]) - set(STATUSES))
    if bad:
        raise ValueError(f"raw manifest status {bad[0]!r}; accepted: {', '.join(STATUSES)}")
    frame["bytes"] = frame["bytes"].fillna(0).astype("int64")
    frame = frame.fillna("")
    # A failure's reason may quote the address it came from, credentials and all.
    frame["reason"] = frame["reason"].astype(str).map(redact)
    return frame.sort_values(["source_split", "key"], kind="stable").reset_index(drop=True)


def write_raw_manifest(raw_dir: Path, rows: Iterable[Mapping]) -> pd.DataFrame:
    frame = raw_manifest(rows)
    write_text(Path(raw_dir) / "manifest.csv", frame.to_csv(index=False, lineterminator="\n"))
    return frame


def read_raw_manifest(raw_dir: Path) -> pd.DataFrame:
    path = Path(raw_dir) / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the dataset's fetch stage first")
    return pd.read_csv(path, dtype={c: str for c in RAW_COLUMNS if c != "bytes"}, keep_default_na=False)
