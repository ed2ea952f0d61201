"""The pets source against servers on loopback: moto's S3 for the bucket, http.server for the label CSVs."""

from __future__ import annotations

import collections
import io
import socket
import time
from pathlib import Path

import pandas as pd
import pytest
import urllib3

from tests.fake_sources import open_images
from tests.loopback import LoopbackServer, free_port
from transferbench.data.raw import SourceUnavailable, read_raw_manifest, sha256_file
from transferbench.data.sources import openimages
from transferbench.data.sources.http import download_record

CAT, DOG, BIRD, CAR = "/m/01yrx", "/m/0bt9lr", "/m/015p6", "/m/0k4j"
# (ImageID, LabelName, Confidence) per split, in the real CSV's column meaning.
LABELS = {
    "train": [("tcat2", CAT, 1), ("tcat1", CAT, 1), ("tcat1", CAT, 1), ("tcat3", CAT, 1), ("tdog1", DOG, 1),
              ("tcatdog", CAT, 1), ("tbird1", BIRD, 1), ("tdog2", DOG, 1), ("tcatdog", DOG, 1),
              ("tnotcat", CAT, 0), ("tcar", CAR, 1), ("tcatonly", CAT, 1), ("tcatonly", DOG, 0),
              ("tdogmissing", DOG, 1)],
    "validation": [("vcat1", CAT, 1), ("vbirdcat", BIRD, 1), ("vdog1", DOG, 1), ("vbird1", BIRD, 1),
                   ("vbird2", BIRD, 1), ("vbirdcat", CAT, 1)],
    "test": [("scat1", CAT, 1), ("sdog1", DOG, 1), ("sbird1", BIRD, 1), ("sbird0", BIRD, 0)],
}
MISSING = {"tdogmissing", "tcar", "tnotcat", "sbird0"}  # labelled, but no object in the bucket
EXPECTED_OK = {
    ("train", "cat"): ["tcat1", "tcat2", "tcat3", "tcatonly"], ("train", "dog"): ["tdog1", "tdog2"],
    ("train", "bird"): ["tbird1"], ("validation", "cat"): ["vcat1"], ("validation", "dog"): ["vdog1"],
    ("validation", "bird"): ["vbird1", "vbird2"], ("test", "cat"): ["scat1"], ("test", "dog"): ["sdog1"],
    ("test", "bird"): ["sbird1"],
}
BUCKETS = ("open-images-dataset", "mirror-bucket")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """(S3 endpoint, CSV base URL, {s3 key: bytes}) of the loopback servers, started once for the module."""
    with open_images(LABELS, MISSING, BUCKETS, tmp_path_factory.mktemp("csv_server"), openimages.csv_name) as found:
        yield found


@pytest.fixture
def values(servers, params, monkeypatch):
    """The real params' pets section pointed at the loopback servers, with short back-off."""
    endpoint, csv_base, _ = servers
    monkeypatch.setattr(openimages, "RETRY_DELAY", 0.01)
    values = params["pets"]
    values["source"].update(csv_base=csv_base, s3_endpoint=endpoint, download_workers=4, retries=2)
    return values


@pytest.fixture
def gets(monkeypatch) -> collections.Counter:
    """S3 GetObject requests per key, counted on every client the module makes."""
    counter: collections.Counter = collections.Counter()
    make = openimages.s3_client

    def counting(*args, **kwargs):
        client = make(*args, **kwargs)
        client.meta.events.register("before-parameter-build.s3.GetObject",
                                    lambda params, **_: counter.update([params["Key"]]))
        return client

    monkeypatch.setattr(openimages, "s3_client", counting)
    return counter


def ok_ids(manifest: pd.DataFrame) -> dict:
    ok = manifest[manifest["status"] == "ok"]
    return {k: sorted(g["image_id"]) for k, g in ok.groupby(["source_split", "label"])}


def leftovers(raw_dir: Path) -> list[Path]:
    """Empty or temporary files under images/: none may survive a failure."""
    return [p for p in (raw_dir / "images").rglob("*")
            if p.is_file() and (p.stat().st_size == 0 or "partial" in p.name)]


def test_labels_splits_and_exclusions(values, tmp_path, gets, servers, monkeypatch):
    monkeypatch.setattr(openimages, "CSV_CHUNK_ROWS", 2)  # an image's rows fall in different chunks
    summary = openimages.fetch(values, tmp_path, seed=0)
    manifest = read_raw_manifest(tmp_path)

    assert ok_ids(manifest) == EXPECTED_OK  # Confidence 0 and other labels left out; duplicates once
    excluded = manifest[manifest["status"] == "excluded"].set_index("image_id")
    assert dict(excluded["reason"]) == {"tcatdog": "multiple labels: cat+dog", "vbirdcat": "multiple labels: cat+bird"}
    assert dict(excluded["source_split"]) == {"tcatdog": "train", "vbirdcat": "validation"}
    for row in manifest[manifest["status"] == "ok"].itertuples():
        assert row.key == f"images/{row.source_split}/{row.image_id}.jpg"
        assert (tmp_path / row.key).read_bytes() == servers[2][f"{row.source_split}/{row.image_id}.jpg"]
        assert sha256_file(tmp_path / row.key) == row.sha256 and row.bytes == (tmp_path / row.key).stat().st_size
    assert summary["counts"]["train"]["cat"] == {"ok": 4, "failed": 0, "excluded": 1,
                                                 "bytes": int(manifest.query("source_split == 'train' and "
                                                                             "label == 'cat'")["bytes"].sum())}
    assert summary["counts"]["validation"]["cat"]["excluded"] == 1 and summary["fetched"] == 14
    assert sorted(gets) == sorted(f"{s}/{i}.jpg" for (s, _), ids in EXPECTED_OK.items() for i in ids)


def test_missing_object_is_failed_not_retried_and_leaves_no_file(values, tmp_path, gets):
    summary = openimages.fetch(values, tmp_path, seed=0)
    failed = read_raw_manifest(tmp_path).query("status == 'failed'")
    assert failed[["image_id", "source_split", "label", "reason", "bytes", "sha256"]].values.tolist() == [
        ["tdogmissing", "train", "dog", "S3 404: Not Found", 0, ""]]
    assert not (tmp_path / "images/train/tdogmissing.jpg").exists() and leftovers(tmp_path) == []
    assert summary["counts"]["train"]["dog"]["failed"] == 1
    assert gets["train/tdogmissing.jpg"] == 0  # its HEAD said 404: no GET, and no second try


def test_limit_is_per_class_and_split_and_takes_sorted_ids(values, tmp_path, gets):
    values["source"]["limit"] = 1
    openimages.fetch(values, tmp_path, seed=0)
    manifest = read_raw_manifest(tmp_path)
    assert ok_ids(manifest) == {k: ids[:1] for k, ids in EXPECTED_OK.items()}
    assert sum(gets.values()) == 9 and set(manifest["source_split"]) == {"train", "validation", "test"}
    assert (manifest["status"] == "excluded").sum() == 2  # excluded images are listed whatever the limit


def test_interrupted_run_resumes_without_fetching_anything_twice(values, tmp_path, gets, monkeypatch):
    real, calls = openimages.fetch_image, []

    def dies_after_five(*args):
        calls.append(args)
        if len(calls) > 5:
            raise KeyboardInterrupt("injected")
        return real(*args)

    monkeypatch.setattr(openimages, "fetch_image", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        openimages.fetch(values, tmp_path, seed=0)
    assert not (tmp_path / "manifest.csv").exists() and leftovers(tmp_path) == []
    assert 5 <= sum(gets.values()) < 14

    monkeypatch.setattr(openimages, "fetch_image", real)
    openimages.fetch(values, tmp_path, seed=0)
    manifest = read_raw_manifest(tmp_path)
    assert ok_ids(manifest) == EXPECTED_OK and set(gets.values()) == {1} and len(gets) == 14

    # Lose one file, truncate another: only those two are fetched again, and verified.
    ok = manifest.query("status == 'ok'")["key"].tolist()
    (tmp_path / ok[0]).unlink()
    (tmp_path / ok[1]).write_bytes((tmp_path / ok[1]).read_bytes()[:50])
    gets.clear()
    openimages.fetch(values, tmp_path, seed=0)
    assert sorted(gets) == sorted(k.removeprefix("images/") for k in ok[:2])
    assert (tmp_path / "manifest.csv").read_bytes() == _manifest_bytes(manifest)


def _manifest_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n").encode()


def test_cut_connection_hidden_by_openimages_is_caught_and_retried(values, tmp_path, monkeypatch):
    """openimages swallows urllib3's ProtocolError: the size check against S3's HEAD notices the short file."""
    real, cuts = openimages.BucketAdapter.download_fileobj, collections.Counter()

    def cut(self, bucket, key, fileobj):
        # tcat1 is cut every time, tdog1 once: half the bytes arrive, then the connection drops.
        if key == "train/tcat1.jpg" or (key == "train/tdog1.jpg" and not cuts[key]):
            cuts[key] += 1
            whole = io.BytesIO()
            real(self, bucket, key, whole)
            fileobj.write(whole.getvalue()[: len(whole.getvalue()) // 2])
            raise urllib3.exceptions.ProtocolError("Connection broken: injected")
        real(self, bucket, key, fileobj)

    monkeypatch.setattr(openimages.BucketAdapter, "download_fileobj", cut)
    openimages.fetch(values, tmp_path, seed=0)
    rows = read_raw_manifest(tmp_path).set_index("image_id")
    assert rows.loc["tdog1", "status"] == "ok" and cuts["train/tdog1.jpg"] == 1
    assert rows.loc["tcat1", "status"] == "failed" and cuts["train/tcat1.jpg"] == 2
    assert rows.loc["tcat1", "reason"].startswith("gave up after 2 tries: incomplete download")
    assert not (tmp_path / "images/train/tcat1.jpg").exists() and leftovers(tmp_path) == []


def test_same_inputs_same_manifest_bytes_from_any_bucket(values, tmp_path):
    openimages.fetch(values, tmp_path / "a", seed=0)
    values["source"]["bucket"] = "mirror-bucket"  # openimages hard-codes the bucket; the adapter does not
    summary = openimages.fetch(values, tmp_path / "b", seed=1)
    assert summary["fetched"] == 14
    first = (tmp_path / "a/manifest.csv").read_bytes()
    assert first == (tmp_path / "b/manifest.csv").read_bytes()
    openimages.fetch(values, tmp_path / "a", seed=0)
    assert first == (tmp_path / "a/manifest.csv").read_bytes()


def test_everything_present_downloads_nothing_again(values, tmp_path, gets):
    values["source"]["limit"] = 2  # leaves out tdogmissing, whose fetch is tried again on every run
    openimages.fetch(values, tmp_path, seed=0)
    first = (tmp_path / "manifest.csv").read_bytes()
    csvs = {path: path.stat().st_ino for path in (tmp_path / "csv").glob("*.csv")}
    gets.clear()
    (tmp_path / "images/train/tcat1.jpg").unlink()  # one file to fetch: S3 must be probed
    openimages.fetch(values, tmp_path, seed=0)  # the CSVs' server says they are unchanged: not downloaded
    assert list(gets) == ["train/tcat1.jpg"]
    assert {path: path.stat().st_ino for path in (tmp_path / "csv").glob("*.csv")} == csvs
    dead = f"http://127.0.0.1:{free_port()}"
    values["source"].update(s3_endpoint=dead)
    summary = openimages.fetch(values, tmp_path, seed=0)
    assert (tmp_path / "manifest.csv").read_bytes() == first and summary["reused"] == 12
    values["source"]["limit"] = 0  # now files are missing: S3 is needed and named
    with pytest.raises(SourceUnavailable, match=f"S3 bucket 'open-images-dataset' at {dead}"):
        openimages.fetch(values, tmp_path, seed=0)


def test_unreachable_sources_fail_fast_naming_what_was_tried(values, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    values["source"].update(csv_base=dead + "/mirror/", s3_endpoint=dead, bucket="some-bucket")
    started = time.perf_counter()
    with pytest.raises(SourceUnavailable) as err:
        openimages.fetch(values, tmp_path, seed=0)
    assert time.perf_counter() - started < 5
    message = str(err.value)
    for expected in (f"{dead}/mirror/train/train-annotations-human-imagelabels.csv",
                     f"S3 bucket 'some-bucket' at {dead}",
                     "pets.source.csv_base", "pets.source.s3_endpoint", "pets.source.bucket", str(tmp_path / "csv")):
        assert expected in message
    assert not (tmp_path / "manifest.csv").exists()


def test_silent_server_times_out_within_seconds(values, tmp_path, monkeypatch):
    # A listening socket that never answers: only the probe's timeout ends the wait.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setattr(openimages, "PROBE_TIMEOUT", 0.3)
        values["source"].update(csv_base=url + "/", s3_endpoint=url)
        started = time.perf_counter()
        with pytest.raises(SourceUnavailable, match="Timeout"):
            openimages.fetch(values, tmp_path, seed=0)
        assert time.perf_counter() - started < 5


@pytest.mark.parametrize("text, error", [
    ("ImageID,LabelName\nabc,/m/01yrx\n", "is not an Open Images labels CSV.*ImageID,Source,LabelName,Confidence"),
    ("ImageID,Source,LabelName,Confidence\n../../x,verification,/m/01yrx,1\n", "ImageID '../../x' is not a plain ID"),
])
def test_bad_csv_is_named_with_what_was_expected(values, tmp_path, text, error):
    (tmp_path / "csv").mkdir()
    for split in openimages.SPLITS:  # placed by hand, and csv_base down: they are used as they are
        (tmp_path / "csv" / openimages.csv_name(split)).write_text(text)
    values["source"].update(csv_base=f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(SourceUnavailable, match="train-annotations-human-imagelabels.csv:? " + error +
                       ".*the file is moved to .*csv/refused/train-annotations-human-imagelabels.csv.[0-9a-f]{12} "
                       "and the next run downloads it again from pets.source.csv_base"):
        openimages.fetch(values, tmp_path, seed=0)


# ---- the label CSVs carry their provenance, as every download does -----------------------------

def labels_csv(rows: list[tuple[str, str, int]]) -> bytes:
    frame = pd.DataFrame(rows, columns=["ImageID", "LabelName", "Confidence"])
    frame.insert(1, "Source", "verification")
    return frame.to_csv(index=False).encode()


def serve_labels(server: LoopbackServer, labels: dict) -> str:
    """The labels' CSVs on ``server`` under /m/; returns the csv_base that points there."""
    for split, rows in labels.items():
        server.files[f"/m/{split}/{openimages.csv_name(split)}"] = labels_csv(rows)
    return server.url("/m/")


def test_a_new_csv_base_or_a_changed_csv_is_fetched_again_never_reused_stale(values, tmp_path):
    openimages.fetch(values, tmp_path, seed=0)
    assert ok_ids(read_raw_manifest(tmp_path))[("train", "cat")] == ["tcat1", "tcat2", "tcat3", "tcatonly"]
    fewer = {**LABELS, "train": [row for row in LABELS["train"] if row[0] != "tcat3"]}
    with LoopbackServer() as mirror:
        values["source"].update(csv_base=serve_labels(mirror, fewer))  # a new mirror, other labels
        openimages.fetch(values, tmp_path, seed=0)
        assert ok_ids(read_raw_manifest(tmp_path))[("train", "cat")] == ["tcat1", "tcat2", "tcatonly"]
        record = download_record(tmp_path / "csv" / openimages.csv_name("train"))
        assert record["url"] == mirror.url("/m/train/train-annotations-human-imagelabels.csv")
        assert {"size", "etag", "last_modified", "sha256"} <= set(record)

        serve_labels(mirror, LABELS)  # the mirror's CSV changes: its ETag says so
        openimages.fetch(values, tmp_path, seed=0)
        assert ok_ids(read_raw_manifest(tmp_path))[("train", "cat")] == ["tcat1", "tcat2", "tcat3", "tcatonly"]
    # Moved to an address that cannot be reached: the labels from elsewhere are not used in its place.
    values["source"].update(csv_base=f"http://127.0.0.1:{free_port()}/other/")
    with pytest.raises(SourceUnavailable, match="labels CSV http://127.0.0.1:[0-9]+/other/train/"):
        openimages.fetch(values, tmp_path, seed=0)


def test_a_csv_refused_for_a_bad_image_id_is_moved_aside_and_the_next_run_proceeds(values, tmp_path):
    bad = {**LABELS, "train": LABELS["train"] + [("../../x", CAT, 1)]}
    with LoopbackServer() as mirror:
        values["source"].update(csv_base=serve_labels(mirror, bad))
        with pytest.raises(SourceUnavailable, match="ImageID '../../x' is not a plain ID.*moved to") as err:
            openimages.fetch(values, tmp_path, seed=0)
        refused = next((tmp_path / "csv" / "refused").glob("train-annotations-human-imagelabels.csv.*[0-9a-f]"))
        assert refused.name in str(err.value) and b"../../x" in refused.read_bytes()
        assert not (tmp_path / "csv" / openimages.csv_name("train")).exists()

        serve_labels(mirror, LABELS)  # the mirror is fixed
        openimages.fetch(values, tmp_path, seed=0)
        assert ok_ids(read_raw_manifest(tmp_path)) == EXPECTED_OK
