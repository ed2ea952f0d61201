"""dogs_vs_cats through the real `kaggle` client talking to a fake Kaggle on loopback.

The fake answers what kaggle 2.x sends for a competition download: POST
/v1/competitions.CompetitionApiService/DownloadDataFiles with HTTP Basic credentials, a 302 to a storage
address, then a (Range-capable) GET of the zip. It refuses unknown credentials (401) and accounts that
have not accepted the rules (403), as Kaggle does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import pytest

from tests.fake_sources import KAGGLE_DOWNLOAD as DOWNLOAD
from tests.fake_sources import KAGGLE_KEY as KEY
from tests.fake_sources import KAGGLE_SECRETS as SECRETS
from tests.fake_sources import KAGGLE_STORAGE as STORAGE
from tests.fake_sources import KAGGLE_USER as USER
from tests.fake_sources import FakeKaggle, jpeg
from tests.fake_sources import kaggle_bundle as bundle
from tests.fake_sources import kaggle_train_zip as train_zip
from tests.loopback import closed_port_url
from transferbench.data.raw import SourceUnavailable, read_raw_manifest
from transferbench.data.sources import kaggle_dogs_vs_cats as kaggle_source

VALUES = {"train": 4, "validation": 2, "test": 2, "height": 32, "width": 32, "workers": 1, "tolerance": 0.0,
          "source": {"competition": "dogs-vs-cats"}}


@pytest.fixture
def kaggle(monkeypatch, tmp_path):
    """The fake Kaggle, with the environment cleared of real credentials and pointed at it."""
    for name in list(os.environ):
        if name.startswith("KAGGLE_") or name in ("VERBOSE", "VERBOSE_OUTPUT"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    with FakeKaggle() as server:
        monkeypatch.setenv(kaggle_source.ENDPOINT_ENV, server.base)
        yield server


def write_kaggle_json(tmp_path: Path, key: str = KEY) -> Path:
    folder = tmp_path / "kaggle-config"
    folder.mkdir(exist_ok=True)
    path = folder / "kaggle.json"
    path.write_text(json.dumps({"username": USER, "key": key}))
    path.chmod(0o600)
    return path


def assert_no_secret(*texts: str, raw_dir: Path | None = None) -> None:
    blobs = [t.encode() for t in texts]
    if raw_dir is not None and raw_dir.exists():
        blobs += [p.read_bytes() for p in raw_dir.rglob("*") if p.is_file() and p.suffix != ".jpg"]
    for secret in SECRETS:
        assert not any(secret.encode() in b for b in blobs), "a Kaggle secret leaked"


def test_download_through_the_kaggle_client(kaggle, tmp_path, capfd, caplog):
    caplog.set_level(logging.INFO, logger="transferbench")
    write_kaggle_json(tmp_path)
    raw_dir = tmp_path / "dogs_vs_cats"
    summary = kaggle_source.fetch(VALUES, raw_dir, seed=0)

    manifest = read_raw_manifest(raw_dir)
    assert manifest.groupby("label").size().to_dict() == {"cat": 5, "dog": 4}
    assert set(manifest["source_split"]) == {"train"} and set(manifest["status"]) == {"ok"}
    assert (raw_dir / manifest["key"][0]).read_bytes() == jpeg(0)  # cat.0.jpg, byte for byte
    post = next(r for r in kaggle.log if r.method == "POST")
    assert post.path == DOWNLOAD and kaggle.user(post.headers["Authorization"]) == USER
    assert kaggle.bytes_served[STORAGE] == len(kaggle.files[STORAGE])
    assert not (raw_dir / ".kaggle-download").exists()  # the bundle (and its test1.zip) is not kept
    output = capfd.readouterr()
    assert_no_secret(output.out, output.err, caplog.text, str(summary), raw_dir=raw_dir)

    before = kaggle.total_requests()
    kaggle_source.fetch(VALUES, raw_dir, seed=0)
    assert kaggle.total_requests() == before  # train.zip present and verified: no network


def test_interrupted_download_is_resumed_from_what_was_written(kaggle, tmp_path, monkeypatch):
    # The kaggle package writes 1 MiB blocks and resumes after the last whole one it wrote (after a
    # back-off of 2-3 s): only the lost part of the broken block is fetched twice.
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    kaggle.files[STORAGE] = bundle(test_bytes=1_500_000)
    cut = 1_300_000
    kaggle.drop_after[STORAGE] = cut
    summary = kaggle_source.fetch(VALUES, tmp_path / "dogs_vs_cats", seed=0)
    assert summary["by_split"] == {"train": {"cat": 5, "dog": 4}}
    ranges = [r.headers.get("Range") for r in kaggle.log if r.path == STORAGE]
    assert len(ranges) == 2 and ranges[0] is None
    resumed_at = int(ranges[1].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= cut
    assert kaggle.bytes_served[STORAGE] == len(kaggle.files[STORAGE]) + cut - resumed_at


def test_rules_not_accepted_says_where_to_accept_them(kaggle, tmp_path, monkeypatch, capfd, caplog):
    caplog.set_level(logging.INFO, logger="transferbench")
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    kaggle.accepted_rules.clear()
    # Even with the package's verbose mode on (which prints request headers) nothing secret comes out.
    monkeypatch.setattr(kaggle_source._api_class(), "args", ["--verbose"])
    raw_dir = tmp_path / "dogs_vs_cats"
    with pytest.raises(SourceUnavailable) as err:
        kaggle_source.fetch(VALUES, raw_dir, seed=0)
    message = str(err.value)
    assert "HTTP 403" in message and "https://www.kaggle.com/c/dogs-vs-cats/rules" in message
    assert "KAGGLE_USERNAME and KAGGLE_KEY" in message and str(raw_dir / "dogs-vs-cats.zip") in message
    assert kaggle.requests[DOWNLOAD] == 1 and kaggle.requests[STORAGE] == 0
    output = capfd.readouterr()
    assert_no_secret(message, output.out, output.err, caplog.text, raw_dir=raw_dir)
    assert not (raw_dir / "manifest.csv").exists()


def test_rejected_credentials_name_their_file_not_their_value(kaggle, tmp_path, capfd, caplog):
    caplog.set_level(logging.INFO, logger="transferbench")
    config = write_kaggle_json(tmp_path, key="revoked-" + KEY)
    with pytest.raises(SourceUnavailable) as err:
        kaggle_source.fetch(VALUES, tmp_path / "dogs_vs_cats", seed=0)
    message = str(err.value)
    assert "HTTP 401" in message and str(config) in message and "kaggle.com/settings" in message
    output = capfd.readouterr()
    assert_no_secret(message, output.out, output.err, caplog.text)
    assert "revoked-" not in message + output.out + output.err + caplog.text


def test_missing_credentials_say_how_to_provide_them_without_network(kaggle, tmp_path):
    raw_dir = tmp_path / "dogs_vs_cats"
    with pytest.raises(SourceUnavailable) as err:
        kaggle_source.fetch(VALUES, raw_dir, seed=0)
    message = str(err.value)
    for hint in ("https://www.kaggle.com/settings", "kaggle.json", "chmod 600", "KAGGLE_USERNAME", "KAGGLE_KEY",
                 str(raw_dir / "dogs-vs-cats.zip"), str(raw_dir / "train.zip")):
        assert hint in message
    assert kaggle.total_requests() == 0


@pytest.mark.parametrize("placed, content", [("dogs-vs-cats.zip", bundle), ("train.zip", train_zip)])
def test_placed_zip_is_used_without_network_or_credentials(kaggle, tmp_path, monkeypatch, placed, content):
    monkeypatch.setenv(kaggle_source.ENDPOINT_ENV, closed_port_url(""))
    raw_dir = tmp_path / "dogs_vs_cats"
    raw_dir.mkdir()
    (raw_dir / placed).write_bytes(content())
    summary = kaggle_source.fetch(VALUES, raw_dir, seed=0)
    assert summary["by_split"] == {"train": {"cat": 5, "dog": 4}}
    assert read_raw_manifest(raw_dir)["key"].str.startswith("extracted/train/").all()
    assert kaggle.total_requests() == 0


def test_corrupt_placed_zip_is_moved_aside_and_the_bundle_used(kaggle, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(kaggle_source.ENDPOINT_ENV, closed_port_url(""))
    raw_dir = tmp_path / "dogs_vs_cats"
    raw_dir.mkdir()
    corrupt = bytearray(train_zip())
    corrupt[len(corrupt) // 3] ^= 0xFF  # inside an entry's data: its CRC fails
    (raw_dir / "train.zip").write_bytes(corrupt)
    (raw_dir / "dogs-vs-cats.zip").write_bytes(bundle())
    with caplog.at_level("WARNING", logger=kaggle_source.__name__):
        summary = kaggle_source.fetch(VALUES, raw_dir, seed=0)
    assert summary["by_split"] == {"train": {"cat": 5, "dog": 4}}
    refused = raw_dir / "refused" / f"train.zip.{hashlib.sha256(corrupt).hexdigest()[:12]}"
    assert refused.read_bytes() == corrupt and kaggle.total_requests() == 0
    [message] = [r.getMessage() for r in caplog.records]
    assert message.startswith(f"{raw_dir / 'train.zip'}: ") and "CRC" in message
    assert message.endswith(f"; moved to {refused}")


def test_unreachable_kaggle_fails_fast_with_what_to_do(kaggle, tmp_path, monkeypatch):
    write_kaggle_json(tmp_path)
    monkeypatch.setenv(kaggle_source.ENDPOINT_ENV, closed_port_url(""))
    raw_dir = tmp_path / "dogs_vs_cats"
    start = time.monotonic()
    with pytest.raises(SourceUnavailable, match="cannot reach Kaggle") as err:
        kaggle_source.fetch(VALUES, raw_dir, seed=0)
    assert time.monotonic() - start < 5
    assert str(raw_dir / "dogs-vs-cats.zip") in str(err.value)
