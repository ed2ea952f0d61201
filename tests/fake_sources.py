"""Every photo source in small, as the tests serve it on loopback: real formats, made on the fly.

Shared by the per-source tests and the end-to-end DVC test, so both exercise the same fakes.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import logging
import pickle
import tarfile
import threading
import zipfile
from collections.abc import Iterator, Mapping
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
from PIL import Image

from tests.loopback import LoopbackServer, Request

# ---- images -----------------------------------------------------------------------------------


def jpeg(seed: int, size: tuple[int, int] = (24, 18)) -> bytes:
    """A small JPEG unique to ``seed``: noise over a colour, so no two decode to the same pixels."""
    rng = np.random.default_rng(seed)
    base = rng.integers(30, 220, 3)
    pixels = np.clip(base + rng.integers(-25, 25, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def make_zip(entries: Mapping[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return out.getvalue()


# ---- Open Images: moto's S3 for the bucket, http.server for the label CSVs ---------------------

MIDS = {"cat": "/m/01yrx", "dog": "/m/0bt9lr", "bird": "/m/015p6"}


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def open_images(labels: Mapping[str, list[tuple[str, str, int]]], missing: set[str], buckets: tuple[str, ...],
                csv_root: Path, csv_name) -> Iterator[tuple[str, str, dict[str, bytes]]]:
    """(S3 endpoint, CSV base URL, {key: bytes}): ``labels[split]`` rows (ImageID, LabelName, Confidence)
    in the human image-label CSVs, and an object ``{split}/{ImageID}.jpg`` for every id not in ``missing``."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # Creating buckets needs a signed client (any credentials); fetching uses the unsigned one users get.
    admin = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                         aws_access_key_id="testing", aws_secret_access_key="testing")
    objects = {}
    for bucket in buckets:
        admin.create_bucket(Bucket=bucket)
    for split, rows in labels.items():
        for n, image_id in enumerate(sorted({r[0] for r in rows} - missing)):
            objects[f"{split}/{image_id}.jpg"] = jpeg(n + 100 * len(split))
    for key, body in objects.items():
        for bucket in buckets:
            admin.put_object(Bucket=bucket, Key=key, Body=body, ACL="public-read")
    for split, rows in labels.items():
        (csv_root / split).mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame(rows, columns=["ImageID", "LabelName", "Confidence"])
        frame.insert(1, "Source", "verification")
        frame.to_csv(csv_root / split / csv_name(split), index=False)
    http = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(csv_root)))
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        yield endpoint, f"http://127.0.0.1:{http.server_port}/", objects
    finally:
        http.shutdown()
        moto.stop()


# ---- cats_and_dogs_filtered: Google's zip layout -----------------------------------------------


def filtered_zip(counts: Mapping[tuple[str, str], int]) -> bytes:
    """Google's layout in small, with the junk Mac-made zips carry; image k of the zip is jpeg(k)."""
    out = io.BytesIO()
    seed = 0
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("cats_and_dogs_filtered/vectorize.py", b"print('not an image')\n")
        for (split, folder), n in counts.items():
            for i in range(n):
                z.writestr(f"cats_and_dogs_filtered/{split}/{folder}/{folder[:-1]}.{i}.jpg", jpeg(seed))
                seed += 1
            z.writestr(f"cats_and_dogs_filtered/{split}/{folder}/.DS_Store", b"junk")
            z.writestr(f"__MACOSX/cats_and_dogs_filtered/{split}/{folder}/._{folder[:-1]}.0.jpg", b"junk")
    return out.getvalue()


# ---- CIFAR-10: the python tarball --------------------------------------------------------------

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def cifar_tar(per_batch: int, seed: int = 4) -> tuple[bytes, dict[str, np.ndarray], dict[str, list[int]]]:
    """The real layout in small: pickled dicts with b'data' (n, 3072) uint8 CHW rows and b'labels'.

    Labels cycle through the ten classes, so every split of a tiny set still has every class.
    """
    rng = np.random.default_rng(seed)
    data, labels = {}, {}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        def add(name: str, content: dict) -> None:
            payload = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        for k, batch in enumerate(CIFAR_BATCHES):
            data[batch] = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            labels[batch] = [(k + i) % 10 for i in range(per_batch)]
            add(batch, {b"batch_label": batch.encode(), b"labels": labels[batch], b"data": data[batch],
                        b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)]})
        add("batches.meta", {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072})
    return out.getvalue(), data, labels


# ---- Kaggle: the competition bundle and a fake API ---------------------------------------------

KAGGLE_USER, KAGGLE_KEY = "alice", "k4ggle-s3cret-key-0123456789"
KAGGLE_SECRETS = (KAGGLE_KEY, base64.b64encode(f"{KAGGLE_USER}:{KAGGLE_KEY}".encode()).decode())
KAGGLE_DOWNLOAD = "/v1/competitions.CompetitionApiService/DownloadDataFiles"
KAGGLE_STORAGE = "/storage/competitions/3362/dogs-vs-cats.zip"


def kaggle_train_zip(cats: int = 5, dogs: int = 4) -> bytes:
    photos = {f"train/{kind}.{i}.jpg": jpeg(1000 * (kind == "dog") + i)
              for kind, n in (("cat", cats), ("dog", dogs)) for i in range(n)}
    return make_zip({**photos, "train/.DS_Store": b"junk"})


def kaggle_bundle(test_bytes: int = 1, cats: int = 5, dogs: int = 4) -> bytes:
    """The competition's "Download All" zip: train.zip, the unlabelled test1.zip and a sample submission."""
    test_photo = np.random.default_rng(0).integers(0, 256, test_bytes, dtype=np.uint8).tobytes()
    return make_zip({"train.zip": kaggle_train_zip(cats, dogs), "test1.zip": make_zip({"test1/1.jpg": test_photo}),
                     "sampleSubmission.csv": b"id,label\n1,0\n"})


class FakeKaggle(LoopbackServer):
    """Accounts, the ones that accepted the competition's rules, and the competition's zip in storage.

    Answers what kaggle 2.x sends for a competition download: POST DownloadDataFiles with HTTP Basic
    credentials, a 302 to a storage address, then a (Range-capable) GET of the zip; 401 for unknown
    credentials and 403 for accounts that have not accepted the rules, as Kaggle does.
    """

    def __init__(self, bundle: bytes | None = None) -> None:
        super().__init__(files={KAGGLE_STORAGE: bundle if bundle is not None else kaggle_bundle()})
        self.accounts = {KAGGLE_USER: KAGGLE_KEY}
        self.accepted_rules: set[str] = {KAGGLE_USER}
        self.post_routes[KAGGLE_DOWNLOAD] = self.download_data_files

    def download_data_files(self, request: Request):
        user = self.user(request.headers.get("Authorization", ""))
        if user is None:
            return self.error(401, "Unauthenticated")
        if user not in self.accepted_rules:
            return self.error(403, "You must accept this competition's rules before you can download files.")
        if json.loads(request.body) != {"competitionName": "dogs-vs-cats"}:
            return self.error(404, "Competition not found")
        return 302, {"Location": KAGGLE_STORAGE + "?X-Goog-Signature=abc"}, b""

    def user(self, authorization: str) -> str | None:
        if not authorization.startswith("Basic "):
            return None
        user, _, key = base64.b64decode(authorization[len("Basic "):]).decode().partition(":")
        return user if self.accounts.get(user) == key else None

    @staticmethod
    def error(code: int, message: str):
        body = json.dumps({"code": code, "message": message}).encode()
        return code, {"Content-Type": "application/json"}, body
