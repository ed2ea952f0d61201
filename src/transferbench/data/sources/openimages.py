"""Source of `pets`: Open Images V4 cat / dog / bird photos, as reference study 000's own code chose them.

Labels: the human-verified image-level labels ``{csv_base}{split}/{split}-annotations-human-imagelabels.csv``
(ImageID,Source,LabelName,Confidence), rows with Confidence 1 for the MIDs in ``MIDS``. They are
downloaded to raw_dir/csv/ as every source's files are (transferbench.data.sources.http: resumable, with
their address, size, ETag, Last-Modified and sha256 recorded beside them), so a CSV is fetched again when
``csv_base`` points elsewhere or the mirror's file changed, and filtered in chunks (the train file is about
1 GB). A CSV with bad content is moved to raw_dir/csv/refused/, so the next run downloads it again. A CSV
placed by hand (no record beside it) is used only when ``csv_base`` cannot give one. Unlike reference study 000, an
image carrying two of the labels is left out (status ``excluded``), and train / validation / test stay
the official splits (the openimages package merges them into one folder per label).

``limit`` keeps the first ``limit`` single-label ImageIDs in sorted order per class *and* split, so a
quick run still has all three splits. openimages' own ``limit`` counts per label over all splits (train
alone uses it up) and its loop ``break``s at the first used-up label, so the labels after it lose their
remaining splits too; ours does neither. Excluded images are always listed, whatever the limit: they
cost no download and explain counts below the reference study's.

Images come from the public bucket (key ``{split}/{ImageID}.jpg``) through openimages'
``_download_single_image`` with an unsigned boto3 client. What that function gets wrong is written
around: it hard-codes the bucket (an adapter substitutes ours), opens the destination before
downloading and swallows urllib3's ProtocolError (we download into a temporary file, check its size
against S3's HEAD and its magic bytes, and only then rename it into raw_dir/images/{split}/).

A file already in place is never fetched again: it must match the size and sha256 of the previous
manifest, or, for files a killed run placed before writing one, look complete (files appear only
by rename after the checks above). ``seed`` is not used: which images are fetched must not depend on it.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pandas as pd
import requests
from boto3.s3.transfer import TransferConfig
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError
from s3transfer.exceptions import RetriesExceededError

from transferbench.core.files import atomic_path
from transferbench.core.inputs import shown
from transferbench.core.progress import Progress
from transferbench.core.redact import redact
from transferbench.data.raw import (
    SourceUnavailable,
    read_raw_manifest,
    record_path,
    refuse,
    retry,
    sha256_file,
    verified,
    write_raw_manifest,
)
from transferbench.data.sources.http import download, download_record, recorded_from

if TYPE_CHECKING:
    from transferbench.data.datasets import OpenImagesSource

MIDS = {"cat": "/m/01yrx", "dog": "/m/0bt9lr", "bird": "/m/015p6"}  # class name -> Open Images MID
SPLITS = ("train", "validation", "test")
CSV_COLUMNS = ["ImageID", "LabelName", "Confidence"]
CSV_CHUNK_ROWS = 500_000           # rows parsed at a time: memory stays flat on the 1 GB train file
PROBE_TIMEOUT = 5.0                # seconds; an unreachable source must fail fast
PROBE_TRIES = 2
RETRY_DELAY = 0.5                  # first back-off, doubled per retry
PERMANENT = {"404", "NoSuchKey", "NoSuchBucket", "403", "AccessDenied"}  # S3 codes a retry cannot fix
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")
IMAGE_ID = r"[0-9A-Za-z_-]{1,64}"  # an ID becomes a file name: no separators, no '..'
CSV_PARAM = "pets.source.csv_base"

log = logging.getLogger(__name__)


class _Transient(Exception):
    """A download that may work when tried again."""


class _Permanent(Exception):
    """A download that will not work however often it is tried."""


# ---- labels ---------------------------------------------------------------------------------

def csv_name(split: str) -> str:
    return f"{split}-annotations-human-imagelabels.csv"


def csv_url(base: str, split: str) -> str:
    return f"{base.rstrip('/')}/{split}/{csv_name(split)}"


def download_csv(url: str, dest: Path, attempts: int, advice: str = "") -> None:
    """``dest`` from ``url`` through http.download (resumed, recorded, fetched again when the address or the
    server's file changed); a CSV placed by hand (no record) is used when ``url`` cannot give one."""
    placed_by_hand = dest.is_file() and download_record(dest) is None
    try:
        download([url], dest, param=CSV_PARAM, attempts=attempts, base_delay=RETRY_DELAY,
                 connect_timeout=PROBE_TIMEOUT, advice=advice)
    except SourceUnavailable:
        if not (placed_by_hand and dest.is_file()):
            raise
        log.warning("%s: %s cannot be reached; using the file placed by hand", shown(dest), redact(url))


def checked_labels(path: Path, mids: Mapping[str, str]) -> pd.DataFrame:
    """read_labels, but a CSV with bad content is moved to refused/ (the message says where): the next run
    downloads it again instead of failing on the same file after the mirror is fixed."""
    try:
        return read_labels(path, mids)
    except SourceUnavailable as err:
        record_path(path).unlink(missing_ok=True)
        record = download_record(path) or {}
        where = refuse(path, path.name, str(err), record.get("url"))
        raise SourceUnavailable(f"{err}; the file is moved to {shown(where)} and the next run downloads it "
                                f"again from {CSV_PARAM}") from None


def read_labels(path: Path, mids: Mapping[str, str]) -> pd.DataFrame:
    """(image_id, label) rows with Confidence 1 for the given MIDs, read in chunks."""
    label_of = {mid: name for name, mid in mids.items()}
    kept = []
    try:
        for chunk in pd.read_csv(path, usecols=CSV_COLUMNS, chunksize=CSV_CHUNK_ROWS,
                                 dtype={"ImageID": str, "LabelName": str, "Confidence": float}):
            hit = chunk[chunk["LabelName"].isin(label_of) & (chunk["Confidence"] == 1)]
            kept.append(pd.DataFrame({"image_id": hit["ImageID"], "label": hit["LabelName"].map(label_of)}))
    except ValueError as err:
        raise SourceUnavailable(f"{path} is not an Open Images labels CSV ({err}); expected columns "
                                "ImageID,Source,LabelName,Confidence") from None
    frame = (pd.concat(kept, ignore_index=True).drop_duplicates() if kept
             else pd.DataFrame(columns=["image_id", "label"]))
    bad = frame.loc[~frame["image_id"].str.fullmatch(IMAGE_ID, na=False), "image_id"]
    if len(bad):
        raise SourceUnavailable(f"{path}: ImageID {bad.iloc[0]!r} is not a plain ID (letters, digits, '_', '-')")
    return frame


def candidates(labels: pd.DataFrame, split: str, classes: list[str], limit: int) -> list[dict]:
    """One item per image of ``split``: single-label ones (first ``limit`` per class), the rest excluded."""
    per_image = labels.groupby("image_id")["label"].agg(lambda s: sorted(set(s), key=classes.index))
    items = []
    for image_id, names in per_image.items():
        item = {"image_id": image_id, "source_split": split, "label": names[0],
                "key": f"images/{split}/{image_id}.jpg", "status": "", "reason": ""}
        if len(names) > 1:
            item.update(status="excluded", reason=f"multiple labels: {'+'.join(names)}")
        items.append(item)
    single = sorted((i for i in items if not i["status"]), key=lambda i: (i["label"], i["image_id"]))
    if limit:
        single = [i for _, group in itertools.groupby(single, key=lambda i: i["label"]) for i in list(group)[:limit]]
    return single + [i for i in items if i["status"] == "excluded"]


# ---- images ---------------------------------------------------------------------------------

def s3_client(endpoint: str, workers: int, *, timeout: float = 30.0, attempts: int = 2):
    """Unsigned S3 client with a connection per worker, bounded timeouts and few botocore retries."""
    config = Config(signature_version=UNSIGNED, max_pool_connections=max(workers, 10), connect_timeout=PROBE_TIMEOUT,
                    read_timeout=timeout, retries={"total_max_attempts": attempts, "mode": "standard"})
    # us-east-1 is the bucket's region; naming it keeps a user's AWS_DEFAULT_REGION from redirecting.
    return boto3.session.Session().client("s3", endpoint_url=endpoint or None, region_name="us-east-1", config=config)


class BucketAdapter:
    """The one client method openimages calls, sent to our bucket instead of its hard-coded one."""

    def __init__(self, client, bucket: str):
        self.client, self.bucket = client, bucket
        self._head = threading.local()
        # With use_threads=False s3transfer runs its HEAD in the caller's thread: a thread-local sees it.
        client.meta.events.register("after-call.s3.HeadObject", self._record_size)
        self._config = TransferConfig(use_threads=False)  # our pool is the parallelism; no pool per file

    def _record_size(self, parsed: dict, **_: Any) -> None:
        self._head.size = parsed.get("ContentLength")

    def download_fileobj(self, bucket: str, key: str, fileobj) -> None:
        self._head.size = None
        self.client.download_fileobj(self.bucket, key, fileobj, Config=self._config)

    def expected_size(self) -> int | None:
        return getattr(self._head, "size", None)


@functools.cache
def _download_single_image() -> Callable[[dict], None]:
    """openimages' downloader, imported without keeping its side effects (global INFO logging, warnings off)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with warnings.catch_warnings():
        from openimages.download import _download_single_image as download
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("openimages.download").addFilter(_repair_record)
    return download


def _repair_record(record: logging.LogRecord) -> bool:
    """openimages logs its error as an argument without a placeholder: without this, logging itself fails."""
    if record.args and "%" not in str(record.msg):
        record.msg = f"{record.msg}: %s"
    return True


def looks_complete(path: Path) -> bool:
    """Non-empty and starting like an image."""
    with open(path, "rb") as f:
        return f.read(8).startswith(IMAGE_MAGIC)


def fetch_image(adapter: BucketAdapter, key: str, dest: Path) -> tuple[int, str]:
    """Download one object to ``dest`` through openimages, checked before it is renamed into place."""
    try:
        with atomic_path(dest) as tmp:
            _download_single_image()({"s3_client": adapter, "image_file_object_path": key, "dest_file_path": str(tmp)})
            size, expected = tmp.stat().st_size, adapter.expected_size()
            if size == 0 or (expected is not None and size != expected):
                raise _Transient(f"incomplete download: {size} of {expected} bytes")  # openimages hid why
            if not looks_complete(tmp):
                raise _Permanent(f"not an image: {key} starts with {tmp.read_bytes()[:8]!r}")
            digest = sha256_file(tmp)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        message = f"S3 {code}: {err.response.get('Error', {}).get('Message', '')}"
        raise (_Permanent if code in PERMANENT else _Transient)(message) from err
    except (BotoCoreError, RetriesExceededError) as err:
        raise _Transient(f"{type(err).__name__}: {err}") from err
    return size, digest


def ensure_image(item: dict, raw_dir: Path, known: Mapping[str, tuple[int, str]], adapter: BucketAdapter,
                 attempts: int) -> dict:
    """The item's manifest row: the file reused if it checks out, otherwise fetched; ``fetched`` says which."""
    dest, record = raw_dir / item["key"], known.get(item["key"])
    if dest.is_file() and (verified(dest, *record) if record else looks_complete(dest)):
        size, digest = record or (dest.stat().st_size, sha256_file(dest))
        return {**item, "status": "ok", "bytes": size, "sha256": digest, "fetched": False}
    s3_key = f"{item['source_split']}/{item['image_id']}.jpg"
    try:
        size, digest = retry(lambda: fetch_image(adapter, s3_key, dest), what=s3_key, attempts=attempts,
                             base_delay=RETRY_DELAY, retry_on=(_Transient,))
    except _Permanent as err:
        return {**item, "status": "failed", "reason": str(err), "fetched": True}
    except _Transient as err:
        if isinstance(err.__cause__, (EndpointConnectionError, ConnectTimeoutError)):
            raise SourceUnavailable(f"S3 endpoint {adapter.client.meta.endpoint_url} went away: {err}") from err
        return {**item, "status": "failed", "reason": f"gave up after {attempts} tries: {err}", "fetched": True}
    return {**item, "status": "ok", "bytes": size, "sha256": digest, "fetched": True}


def parallel(work: Callable[[dict], dict], items: Iterable[dict], workers: int) -> Iterator[dict]:
    """``work(item)`` on ``workers`` threads, results as they finish; a bounded queue keeps memory flat."""
    queue = iter(items)
    with ThreadPoolExecutor(workers) as pool:
        pending: set = set()
        try:
            while True:
                pending |= {pool.submit(work, i) for i in itertools.islice(queue, 4 * workers - len(pending))}
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:  # an error stops the run: finish what is running, start nothing new
                future.cancel()


# ---- fail fast ------------------------------------------------------------------------------

def _head_status(url: str) -> int:
    return requests.head(url, timeout=PROBE_TIMEOUT, allow_redirects=True).status_code


def probe_csv(urls: list[str]) -> list[str]:
    """Problems reaching the CSV URLs (HEAD, short timeout), as readable lines."""
    for url in urls:
        try:
            status = retry(functools.partial(_head_status, url), what=url, attempts=PROBE_TRIES, base_delay=0.2)
        except requests.RequestException as err:
            return [f"labels CSV {url}: {type(err).__name__}: {err}"]  # the host is down: skip its other files
        if status != 200:
            return [f"labels CSV {url}: HTTP {status}"]
    return []


def probe_s3(endpoint: str, bucket: str) -> list[str]:
    """Problems reaching the bucket (HEAD bucket, short timeout); a 403 still proves it is there."""
    client = s3_client(endpoint, 1, timeout=PROBE_TIMEOUT, attempts=PROBE_TRIES)
    where = f"S3 bucket {bucket!r} at {client.meta.endpoint_url}"
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        return [] if code in {"403", "AccessDenied"} else [f"{where}: S3 {code}"]
    except BotoCoreError as err:
        return [f"{where}: {type(err).__name__}: {err}"]
    return []


def require(problems: list[str], raw_dir: Path) -> None:
    """Raise SourceUnavailable listing what failed and how to provide the data instead."""
    if problems:
        raise SourceUnavailable("pets: Open Images cannot be reached:\n  " + "\n  ".join(problems) + "\n" +
                                _by_hand(raw_dir))


def _by_hand(raw_dir: Path) -> str:
    return ("To use a mirror set params pets.source.csv_base (a folder with {split}/{split}-annotations-"
            "human-imagelabels.csv), pets.source.s3_endpoint and pets.source.bucket (objects {split}/{ImageID}.jpg), "
            "e.g. `dvc exp run -S pets.source.s3_endpoint=http://mirror:9000`; or put "
            f"{', '.join(csv_name(s) for s in SPLITS)} in {raw_dir / 'csv'} and the images in "
            f"{raw_dir / 'images'}/{{split}}/{{ImageID}}.jpg")


# ---- the stage ------------------------------------------------------------------------------

def previous_records(raw_dir: Path) -> dict[str, tuple[int, str]]:
    """key -> (bytes, sha256) of the files the last manifest recorded as ok."""
    if not (raw_dir / "manifest.csv").is_file():
        return {}
    old = read_raw_manifest(raw_dir)
    old = old[old["status"] == "ok"]
    return {k: (int(b), s) for k, b, s in zip(old["key"], old["bytes"], old["sha256"], strict=True)}


def summarise(rows: list[dict], seconds: float, workers: int, limit: int) -> dict:
    """Counts and bytes per split and class, and the download rate of what was fetched this run."""
    counts = {s: {c: {"ok": 0, "failed": 0, "excluded": 0, "bytes": 0} for c in MIDS} for s in SPLITS}
    for row in rows:
        cell = counts[row["source_split"]][row["label"]]
        cell[row["status"]] += 1
        cell["bytes"] += int(row.get("bytes") or 0)
    fetched = [r for r in rows if r.get("fetched") and r["status"] == "ok"]
    reused = sum(r["status"] == "ok" and not r.get("fetched") for r in rows)
    fetched_bytes = sum(r["bytes"] for r in fetched)
    return {"counts": counts, "fetched": len(fetched), "reused": reused, "fetched_bytes": fetched_bytes,
            "seconds": round(seconds, 3), "download_workers": workers, "limit": limit,
            "images_per_second": round(len(fetched) / seconds, 1) if seconds else 0.0,
            "megabytes_per_second": round(fetched_bytes / 1e6 / seconds, 2) if seconds else 0.0}


def fetch_labels(source: OpenImagesSource, raw_dir: Path) -> list[dict]:
    """Every candidate image of the three splits, from CSVs in raw_dir/csv/ (downloaded unless current)."""
    paths = {s: raw_dir / "csv" / csv_name(s) for s in SPLITS}
    # Missing, or recorded from another address: both sources will be needed, checked before a 1 GB download.
    # (A CSV placed by hand is tried against csv_base without this check, and used if csv_base is down.)
    wanted = [s for s, path in paths.items()
              if not path.is_file() or not recorded_from(path, csv_url(source.csv_base, s), missing=True)]
    if wanted:
        require(probe_csv([csv_url(source.csv_base, s) for s in wanted])
                + probe_s3(source.s3_endpoint, source.bucket), raw_dir)
    items = []
    for split, path in paths.items():
        download_csv(csv_url(source.csv_base, split), path, source.retries, advice=_by_hand(raw_dir))
        items += candidates(checked_labels(path, MIDS), split, list(MIDS), source.limit)
    return items


def fetch_images(items: list[dict], source: OpenImagesSource, raw_dir: Path) -> tuple[list[dict], float]:
    """Manifest rows of ``items`` (each reused or downloaded) and the seconds it took."""
    if any(not (raw_dir / i["key"]).is_file() for i in items):
        require(probe_s3(source.s3_endpoint, source.bucket), raw_dir)
    workers = source.download_workers
    adapter = BucketAdapter(s3_client(source.s3_endpoint, workers), source.bucket)
    work = functools.partial(ensure_image, raw_dir=raw_dir, known=previous_records(raw_dir), adapter=adapter,
                             attempts=source.retries)
    started, rows = time.perf_counter(), []
    with Progress("pets images", len(items)) as bar:
        for row in parallel(work, items, workers):
            rows.append(row)
            bar.update()
    return rows, time.perf_counter() - started


def fetch(values: Any, raw_dir: Path, seed: int, limits: Any = None) -> dict:
    """Fetch labels and images into ``raw_dir``, write its manifest, return the fetch report (``limits``: the
    extraction limits every source is given; Open Images has no archive)."""
    from transferbench.config.sections import parse
    from transferbench.data.datasets import PetsParams

    source, raw_dir = parse(PetsParams, values, "pets").source, Path(raw_dir)
    for stale in itertools.chain(raw_dir.glob("csv/.*.partial"), raw_dir.glob("images/*/.*.partial")):
        stale.unlink()  # left by a killed run
    items = fetch_labels(source, raw_dir)
    rows, seconds = fetch_images([i for i in items if i["status"] != "excluded"], source, raw_dir)
    rows += [i for i in items if i["status"] == "excluded"]
    write_raw_manifest(raw_dir, [{k: v for k, v in r.items() if k != "fetched"} for r in rows])
    return summarise(rows, seconds, source.download_workers, source.limit)
