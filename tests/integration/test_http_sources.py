"""Downloads from loopback servers, and the two URL sources (cats_and_dogs_filtered, cifar10) end to end."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import time

import numpy as np
import pytest

from tests.fake_sources import CIFAR_NAMES, cifar_tar, filtered_zip, jpeg, make_zip
from tests.loopback import LoopbackServer, closed_port_url
from transferbench.core.files import read_json
from transferbench.data.raw import RAW_COLUMNS, SourceUnavailable, read_raw_manifest
from transferbench.data.sources import cats_and_dogs_filtered, cifar10
from transferbench.data.sources.archives import check_zip
from transferbench.data.sources.http import download, download_record, partial_path

FAST = {"base_delay": 0.01}  # retries without the real back-off


@pytest.fixture
def server():
    with LoopbackServer() as s:
        yield s


def blob(n: int, seed: int = 0) -> tuple[bytes, str]:
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    return data, hashlib.sha256(data).hexdigest()


# ---- http.download ----------------------------------------------------------------------------

def test_dead_first_address_falls_back_to_the_next(server, tmp_path):
    data, sha = blob(50_000)
    server.files["/mirror/f.bin"] = data
    urls = [closed_port_url(), server.url("/moved-away/f.bin"), server.url("/mirror/f.bin")]
    dest = download(urls, tmp_path / "f.bin", param="x.source.urls", sha256=sha, size=len(data), **FAST)
    assert dest.read_bytes() == data
    assert server.requests["/moved-away/f.bin"] == 1  # a 404 is not retried
    assert not partial_path(dest).exists()


def test_wrong_checksum_is_refused_moved_aside_and_nothing_left_under_the_final_name(server, tmp_path):
    data, sha = blob(10_000)
    server.files["/f.bin"] = data
    expected = "0" * 64
    with pytest.raises(SourceUnavailable) as err:
        download([server.url("/f.bin")], tmp_path / "f.bin", param="x.source.urls", sha256=expected, **FAST)
    message = str(err.value)
    refused = tmp_path / "refused" / f"f.bin.{sha[:12]}"
    assert server.url("/f.bin") in message and expected in message and sha in message and str(refused) in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refused"]
    assert refused.read_bytes() == data
    assert read_json(refused.with_name(refused.name + ".json"))["url"] == server.url("/f.bin")


def test_download_cut_half_way_resumes_next_run_without_fetching_a_byte_twice(server, tmp_path):
    data, sha = blob(300_000)
    server.files["/f.bin"] = data
    server.drop_after["/f.bin"] = 120_000
    dest = tmp_path / "f.bin"
    with pytest.raises(SourceUnavailable, match="broke off"):
        download([server.url("/f.bin")], dest, param="x.source.urls", sha256=sha, attempts=1, **FAST)
    assert not dest.exists() and partial_path(dest).stat().st_size == 120_000
    download([server.url("/f.bin")], dest, param="x.source.urls", sha256=sha, attempts=1, **FAST)
    assert dest.read_bytes() == data
    assert server.bytes_served["/f.bin"] == len(data)
    assert [r.headers.get("Range") for r in server.log] == [None, "bytes=120000-"]


def test_download_cut_half_way_is_retried_in_the_same_run(server, tmp_path):
    data, sha = blob(200_000)
    server.files["/f.bin"] = data
    server.drop_after["/f.bin"] = 50_000
    dest = download([server.url("/f.bin")], tmp_path / "f.bin", param="x.source.urls", sha256=sha, **FAST)
    assert dest.read_bytes() == data and server.bytes_served["/f.bin"] == len(data)
    assert server.requests["/f.bin"] == 2


def test_server_without_range_support_restarts_the_file(server, tmp_path):
    data, sha = blob(100_000)
    server.files["/f.bin"] = data
    server.ranges = False
    dest = tmp_path / "f.bin"
    partial_path(dest).write_bytes(data[:40_000])
    download([server.url("/f.bin")], dest, param="x.source.urls", sha256=sha, **FAST)
    assert dest.read_bytes() == data and server.bytes_served["/f.bin"] == len(data)


def test_partial_without_a_key_is_not_continued(server, tmp_path):
    data, sha = blob(100_000)
    server.files["/f.bin"] = data
    dest = tmp_path / "f.bin"
    partial_path(dest).write_bytes(blob(30_000, seed=1)[0])  # left by some other download: whose, unknown
    download([server.url("/f.bin")], dest, param="x.source.urls", sha256=sha, **FAST)
    assert dest.read_bytes() == data
    assert [r.headers.get("Range") for r in server.log] == [None]


def test_present_and_verified_file_means_no_request(server, tmp_path):
    data, sha = blob(10_000)
    (tmp_path / "f.bin").write_bytes(data)  # placed by hand: its pinned sha256 says it is the one asked for
    download([server.url("/f.bin")], tmp_path / "f.bin", param="x.source.urls", sha256=sha, size=len(data))
    assert server.total_requests() == 0


def test_present_but_bad_file_is_moved_aside_and_downloaded_again(server, tmp_path, caplog):
    data, sha = blob(10_000)
    server.files["/f.bin"] = data
    (tmp_path / "f.bin").write_bytes(b"not it")
    with caplog.at_level("WARNING", logger="transferbench.data.sources.http"):
        download([server.url("/f.bin")], tmp_path / "f.bin", param="x.source.urls", sha256=sha, **FAST)
    assert (tmp_path / "f.bin").read_bytes() == data
    bad = hashlib.sha256(b"not it").hexdigest()
    refused = tmp_path / "refused" / f"f.bin.{bad[:12]}"
    assert refused.read_bytes() == b"not it"
    assert caplog.messages == [f"{tmp_path / 'f.bin'}: sha256 mismatch: expected {sha}, got {bad}; moved to "
                               f"{refused} and downloading it again"]


def test_no_reachable_address_fails_fast_naming_each_and_what_to_do(tmp_path):
    urls = [closed_port_url("/a.zip"), closed_port_url("/b.zip"), (tmp_path / "nowhere.zip").as_uri()]
    dest = tmp_path / "raw" / "f.zip"
    start = time.monotonic()
    with pytest.raises(SourceUnavailable) as err:
        download(urls, dest, param="mydata.source.urls", sha256="ab" * 32)
    assert time.monotonic() - start < 5
    message = str(err.value)
    for url in urls:
        assert url in message
    assert "Connection refused" in message and "no such file" in message
    assert str(dest) in message and "mydata.source.urls" in message and "ab" * 32 in message


def test_file_mirror_is_copied_and_verified(tmp_path):
    data, sha = blob(70_000)
    mirror = tmp_path / "shared" / "f.bin"
    mirror.parent.mkdir()
    mirror.write_bytes(data)
    dest = download([mirror.as_uri()], tmp_path / "raw" / "f.bin", param="x.source.urls", sha256=sha)
    assert dest.read_bytes() == data


# ---- cats_and_dogs_filtered -------------------------------------------------------------------

FILTERED_COUNTS = {("train", "cats"): 4, ("train", "dogs"): 3, ("validation", "cats"): 2, ("validation", "dogs"): 2}


PREPARATION = {"height": 32, "width": 32, "workers": 1, "tolerance": 0.0}  # what fetching does not read


def filtered_values(urls: list[str], sha256: str | None = None) -> dict:
    return {"validation": 2, "test": 2, **PREPARATION, "source": {"urls": urls, "sha256": sha256}}


def test_cats_and_dogs_filtered_fetch_writes_the_manifest_and_pins_the_zip(server, tmp_path, caplog):
    archive = filtered_zip(FILTERED_COUNTS)
    server.files["/new/cats_and_dogs_filtered.zip"] = archive
    raw_dir = tmp_path / "cats_and_dogs_filtered"
    values = filtered_values([closed_port_url(), server.url("/new/cats_and_dogs_filtered.zip")])
    with caplog.at_level(logging.INFO, logger="transferbench"):
        summary = cats_and_dogs_filtered.fetch(values, raw_dir, seed=0)

    manifest = read_raw_manifest(raw_dir)
    assert list(manifest.columns) == RAW_COLUMNS
    counts = manifest.groupby(["source_split", "label"]).size().to_dict()
    assert counts == {("train", "cat"): 4, ("train", "dog"): 3, ("validation", "cat"): 2, ("validation", "dog"): 2}
    assert set(manifest["status"]) == {"ok"}
    assert not manifest["key"].str.contains("MACOSX|DS_Store|vectorize").any()
    for row in manifest.itertuples():
        stored = (raw_dir / row.key).read_bytes()
        assert len(stored) == row.bytes and hashlib.sha256(stored).hexdigest() == row.sha256
    assert summary["archive_sha256"] == hashlib.sha256(archive).hexdigest()
    assert summary["archive_sha256"] in caplog.text  # reported so it can be pinned
    assert summary["by_split"]["train"] == {"cat": 4, "dog": 3}

    requests_before = len(server.log)
    cats_and_dogs_filtered.fetch(values, raw_dir, seed=0)
    # Present and verified: no download, one HEAD asking whether the mirror's zip changed (no pinned sha256).
    assert [r.method for r in server.log[requests_before:]] == ["HEAD"]
    assert read_raw_manifest(raw_dir).equals(manifest)


def test_cats_and_dogs_filtered_corrupt_zip_without_checksum_is_refused(server, tmp_path):
    archive = bytearray(filtered_zip(FILTERED_COUNTS))
    first_image = jpeg(0)
    archive[archive.index(first_image) + 50] ^= 0xFF  # stored entry: this byte is the file's own
    server.files["/cats_and_dogs_filtered.zip"] = bytes(archive)
    raw_dir = tmp_path / "cats_and_dogs_filtered"
    with pytest.raises(SourceUnavailable, match="CRC"):
        cats_and_dogs_filtered.fetch(filtered_values([server.url("/cats_and_dogs_filtered.zip")]), raw_dir, 0)
    assert not (raw_dir / cats_and_dogs_filtered.ARCHIVE).exists() and not (raw_dir / "extracted").exists()


def test_check_zip_accepts_the_generated_layout(tmp_path):
    (tmp_path / "a.zip").write_bytes(filtered_zip(FILTERED_COUNTS))
    check_zip(tmp_path / "a.zip")


# ---- cifar10 ----------------------------------------------------------------------------------

def test_cifar10_fetch_and_load_give_hwc_pixels(server, tmp_path):
    archive, data, labels = cifar_tar(per_batch=3)
    server.files["/cifar-10-python.tar.gz"] = archive
    raw_dir = tmp_path / "cifar10"
    values = {"validation": 2, **PREPARATION, "source": {"urls": [server.url("/cifar-10-python.tar.gz")],
                                                         "sha256": hashlib.sha256(archive).hexdigest()}}
    summary = cifar10.fetch(values, raw_dir, seed=0)

    manifest = read_raw_manifest(raw_dir)
    assert len(manifest) == 18 and summary["items"] == 18
    assert manifest.groupby("source_split").size().to_dict() == {"test": 3, "train": 15}
    row = manifest.set_index("key").loc["data_batch_2:0001"]
    assert row["label"] == CIFAR_NAMES[labels["data_batch_2"][1]] and row["bytes"] == 3072
    red, green, blue = data["data_batch_2"][1].reshape(3, 32, 32)
    image = cifar10.load(raw_dir, "data_batch_2:0001")
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], red) and np.array_equal(image[..., 2], blue)
    assert image[5, 7, 1] == green[5, 7]
    assert row["sha256"] == hashlib.sha256(image.tobytes()).hexdigest()
    assert (manifest["source_split"] == "test").sum() == 3
    assert set(manifest.loc[manifest["source_split"] == "test", "key"]) == {f"test_batch:000{i}" for i in range(3)}


def test_cifar10_load_rejects_unknown_keys_and_pickles_that_run_code(tmp_path):
    with pytest.raises(ValueError, match="accepted: <batch>:<index>"):
        cifar10.load(tmp_path, "train_batch:0001")
    folder = tmp_path / cifar10.FOLDER
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(pickle.dumps(os.system, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="may not refer to posix.system"):
        cifar10.load(tmp_path, "data_batch_1:0000")


def test_cifar10_unreachable_names_the_param(tmp_path):
    values = {"validation": 2, **PREPARATION,
              "source": {"urls": [closed_port_url("/cifar-10-python.tar.gz")], "sha256": "ab" * 32}}
    with pytest.raises(SourceUnavailable, match="cifar10.source.urls"):
        cifar10.fetch(values, tmp_path / "cifar10", seed=0)
    assert not (tmp_path / "cifar10" / "manifest.csv").exists()


# ---- what was asked for: keys and refusals ----------------------------------------------------

def test_a_partial_from_another_address_is_not_continued(server, tmp_path):
    old, _ = blob(100_000, seed=1)
    new, new_sha = blob(100_000, seed=2)
    server.files["/old.bin"], server.files["/new.bin"] = old, new
    server.drop_after["/old.bin"] = 40_000
    dest = tmp_path / "f.bin"
    with pytest.raises(SourceUnavailable, match="broke off"):
        download([server.url("/old.bin")], dest, param="x.source.urls", attempts=1, **FAST)
    assert partial_path(dest).stat().st_size == 40_000
    download([server.url("/new.bin")], dest, param="x.source.urls", attempts=1, **FAST)
    assert dest.read_bytes() == new and hashlib.sha256(dest.read_bytes()).hexdigest() == new_sha
    assert [(r.path, r.headers.get("Range")) for r in server.log] == [("/old.bin", None), ("/new.bin", None)]


def test_a_partial_of_a_file_changed_on_the_server_is_restarted(server, tmp_path):
    # Same address, same size, other bytes (a new release): without a pinned sha256, continuing the old
    # partial would splice two versions into one file that nothing could catch.
    old, new = blob(100_000, seed=1)[0], blob(100_000, seed=2)[0]
    server.files["/f.bin"] = old
    server.drop_after["/f.bin"] = 40_000
    dest = tmp_path / "f.bin"
    with pytest.raises(SourceUnavailable, match="broke off"):
        download([server.url("/f.bin")], dest, param="x.source.urls", attempts=1, **FAST)
    server.files["/f.bin"] = new
    download([server.url("/f.bin")], dest, param="x.source.urls", attempts=2, **FAST)
    assert dest.read_bytes() == new
    assert [r.headers.get("Range") for r in server.log] == [None, "bytes=40000-", None]


def test_the_record_names_the_address_the_file_came_from(server, tmp_path):
    data, sha = blob(20_000)
    server.files["/mirror/f.bin"] = data
    urls = [server.url("/gone/f.bin"), server.url("/mirror/f.bin")]
    download(urls, tmp_path / "f.bin", param="x.source.urls", **FAST)
    record = download_record(tmp_path / "f.bin")
    assert (record["url"], record["size"], record["sha256"]) == (urls[1], len(data), sha)
    assert record["etag"] and record["last_modified"]
    assert not (tmp_path / "f.bin.partial.json").exists()
    download(urls, tmp_path / "f.bin", param="x.source.urls", **FAST)
    methods = [r.method for r in server.log if r.path == "/mirror/f.bin"]
    assert methods == ["GET", "HEAD"], "the same request again: the recorded file is reused once the server says " \
                                       "it is unchanged"


def test_a_file_nobody_recorded_is_not_trusted_without_a_pinned_sha256(server, tmp_path):
    data, _ = blob(20_000)
    server.files["/f.bin"] = data
    (tmp_path / "f.bin").write_bytes(b"whatever was here")
    download([server.url("/f.bin")], tmp_path / "f.bin", param="x.source.urls", **FAST)
    assert (tmp_path / "f.bin").read_bytes() == data


def test_by_hand_advice_without_a_pinned_sha256_says_to_pin_it(tmp_path):
    with pytest.raises(SourceUnavailable, match=r"set `mydata.source.sha256` in params.yaml to its sha256"):
        download([closed_port_url()], tmp_path / "f.zip", param="mydata.source.urls")


def test_a_changed_source_is_fetched_again_and_the_report_names_the_new_archive(server, tmp_path):
    old, new = filtered_zip(FILTERED_COUNTS), filtered_zip({("train", "cats"): 1, ("train", "dogs"): 1,
                                                            ("validation", "cats"): 1, ("validation", "dogs"): 1})
    server.files["/v1/cats_and_dogs_filtered.zip"] = old
    server.files["/v2/cats_and_dogs_filtered.zip"] = new
    raw_dir = tmp_path / "cats_and_dogs_filtered"
    first = cats_and_dogs_filtered.fetch(filtered_values([server.url("/v1/cats_and_dogs_filtered.zip")]), raw_dir, 0)
    assert first["items"] == 11

    summary = cats_and_dogs_filtered.fetch(filtered_values([server.url("/v2/cats_and_dogs_filtered.zip")]), raw_dir, 0)
    assert server.requests["/v2/cats_and_dogs_filtered.zip"] == 1
    assert (raw_dir / cats_and_dogs_filtered.ARCHIVE).read_bytes() == new
    assert (summary["archive_sha256"], summary["archive_bytes"]) == (hashlib.sha256(new).hexdigest(), len(new))
    assert summary["items"] == len(read_raw_manifest(raw_dir)) == 4
    assert first["archive_url"] == server.url("/v1/cats_and_dogs_filtered.zip")
    assert summary["archive_url"] == server.url("/v2/cats_and_dogs_filtered.zip")


def test_an_unsafe_archive_is_moved_aside_and_the_next_address_used(server, tmp_path):
    evil = make_zip({"cats_and_dogs_filtered/train/cats/cat.0.jpg": jpeg(0), "../escaped.txt": b"x"})
    server.files["/evil/cats_and_dogs_filtered.zip"] = evil
    server.files["/good/cats_and_dogs_filtered.zip"] = filtered_zip(FILTERED_COUNTS)
    raw_dir = tmp_path / "raw" / "cats_and_dogs_filtered"
    urls = [server.url("/evil/cats_and_dogs_filtered.zip"), server.url("/good/cats_and_dogs_filtered.zip")]
    summary = cats_and_dogs_filtered.fetch(filtered_values(urls), raw_dir, 0)
    assert summary["archive_url"] == urls[1] and summary["items"] == 11
    refused = raw_dir / "refused" / f"cats_and_dogs_filtered.zip.{hashlib.sha256(evil).hexdigest()[:12]}"
    assert refused.read_bytes() == evil
    why = read_json(refused.with_name(refused.name + ".json"))
    assert why["url"] == urls[0] and "climbs out with '..'" in why["reason"]
    assert not (tmp_path / "raw" / "escaped.txt").exists()


def test_an_unsafe_archive_from_the_only_address_says_where_it_went_and_the_next_run_proceeds(server, tmp_path):
    evil = make_zip({"cats_and_dogs_filtered/train/cats/cat.0.jpg": jpeg(0), "/etc/evil": b"x"})
    server.files["/cats_and_dogs_filtered.zip"] = evil
    raw_dir = tmp_path / "cats_and_dogs_filtered"
    values = filtered_values([server.url("/cats_and_dogs_filtered.zip")])
    with pytest.raises(SourceUnavailable) as err:
        cats_and_dogs_filtered.fetch(values, raw_dir, 0)
    refused = raw_dir / "refused" / f"cats_and_dogs_filtered.zip.{hashlib.sha256(evil).hexdigest()[:12]}"
    assert "has an absolute path" in str(err.value) and str(refused) in str(err.value)
    assert sorted(p.name for p in raw_dir.iterdir()) == ["refused"]

    server.files["/cats_and_dogs_filtered.zip"] = filtered_zip(FILTERED_COUNTS)  # the source is fixed
    assert cats_and_dogs_filtered.fetch(values, raw_dir, 0)["items"] == 11


def test_a_mirror_login_comes_from_netrc_and_is_recorded_nowhere(server, tmp_path, monkeypatch):
    # params.yaml refuses an address with a login in it (dvc.lock would keep it): ~/.netrc carries it instead.
    data, sha = blob(20_000)
    server.files["/private/f.bin"] = data
    server.logins["/private/f.bin"] = ("reader", "s3cr3t")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    (tmp_path / "netrc").write_text("machine 127.0.0.1 login reader password other\n")
    with pytest.raises(SourceUnavailable, match="HTTP 401"):
        download([server.url("/private/f.bin")], tmp_path / "raw" / "f.bin", param="x.urls", **FAST)
    (tmp_path / "netrc").write_text("machine 127.0.0.1 login reader password s3cr3t\n")
    got = download([server.url("/private/f.bin")], tmp_path / "raw" / "f.bin", param="x.urls", **FAST)
    assert got.read_bytes() == data and download_record(got)["sha256"] == sha
    assert not [p for p in (tmp_path / "raw").rglob("*") if p.is_file() and b"s3cr3t" in p.read_bytes()]


def test_a_file_changed_on_the_server_is_fetched_again_and_an_unreachable_one_reused(server, tmp_path, caplog):
    old, _ = blob(20_000, seed=1)
    new, new_sha = blob(20_000, seed=2)  # the same size: only the ETag tells them apart
    server.files["/f.bin"] = old
    download([server.url("/f.bin")], tmp_path / "f.bin", param="x.source.urls", **FAST)
    server.files["/f.bin"] = new
    with caplog.at_level(logging.INFO, logger="transferbench.data.sources.http"):
        download([server.url("/f.bin")], tmp_path / "f.bin", param="x.source.urls", **FAST)
    assert (tmp_path / "f.bin").read_bytes() == new and download_record(tmp_path / "f.bin")["sha256"] == new_sha
    assert "changed on" in caplog.text and "etag" in caplog.text
    server.close()  # offline: the recorded file is used, with a word
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="transferbench.data.sources.http"):
        download([server.url("/f.bin")], tmp_path / "f.bin", param="x.source.urls", **FAST)
    assert (tmp_path / "f.bin").read_bytes() == new and "could not ask whether the file changed" in caplog.text
