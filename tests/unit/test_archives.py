"""Safe extraction: entries that would escape the target are refused before anything is written."""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from transferbench.config.extraction import Extraction
from transferbench.core.errors import UserError
from transferbench.core.files import read_json
from transferbench.data.raw import record_path
from transferbench.data.sources import archives
from transferbench.data.sources.archives import (
    ArchiveTooLarge,
    CorruptArchive,
    UnsafeArchive,
    check_archive,
    check_zip,
    ensure_extracted,
    extract,
    extract_member,
)
from transferbench.study.params import load_params


def make_zip(path: Path, entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return path


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            archive.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def tar_info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    return info


def symlink_zip_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix, whose mode bits say "symlink"
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_good_zip_and_tar_extract_in_place_with_stamp(tmp_path):
    entries = {"top/a.txt": b"alpha", "top/sub/b.bin": bytes(range(256))}
    zipped = make_zip(tmp_path / "a.zip", entries)
    tarred = make_tar(tmp_path / "a.tar.gz", [(tar_info(n), d) for n, d in entries.items()])
    for archive, target in ((zipped, tmp_path / "z"), (tarred, tmp_path / "t")):
        extract(archive, target, {"sha256": "x"})
        assert (target / "top/a.txt").read_bytes() == b"alpha"
        assert (target / "top/sub/b.bin").read_bytes() == bytes(range(256))
        assert not target.with_name(f".{target.name}.extracting").exists()


@pytest.mark.parametrize("name", ["../evil.txt", "top/../../evil.txt", "{tmp}/evil-absolute.txt"])
def test_zip_entry_escaping_the_target_is_refused_and_nothing_written(tmp_path, name):
    name = name.format(tmp=tmp_path)  # an absolute name pointing at a place the test can look at
    archive = make_zip(tmp_path / "bad.zip", {"ok.txt": b"fine", name: b"evil"})
    target = tmp_path / "out" / "target"
    with pytest.raises(UnsafeArchive, match=name.replace(".", r"\.")):
        check_archive(archive)
    with pytest.raises(UnsafeArchive, match=name.replace(".", r"\.")):
        extract(archive, target)
    assert not target.exists()
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "evil-absolute.txt").exists()
    assert files_under(tmp_path / "out") == set()  # not even the good entry, nor the temporary folder


def test_zip_symlink_entry_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(*symlink_zip_entry("etc", "/etc"))
    with pytest.raises(UnsafeArchive, match="'etc' is a symlink"):
        extract(archive, tmp_path / "target")
    assert not (tmp_path / "target").exists()


@pytest.mark.parametrize("members, bad", [
    ([(tar_info("etc", tarfile.SYMTYPE, "/etc"), b"")], "'etc' is a symlink to '/etc'"),
    ([(tar_info("up", tarfile.SYMTYPE, "../.."), b"")], "'up' is a symlink to '../..'"),
    ([(tar_info("hard", tarfile.LNKTYPE, "../outside.txt"), b"")], "'hard' is a hard link"),
    ([(tar_info("dev", tarfile.CHRTYPE), b"")], "'dev' is a character device"),
    ([(tar_info("pipe", tarfile.FIFOTYPE), b"")], "'pipe' is a fifo"),
    ([(tar_info("../evil.txt"), b"evil")], "'../evil.txt' climbs out"),
    ([(tar_info("{tmp}/evil-absolute.txt"), b"evil")], "absolute path"),
    # A link that points inside, then a file written through it: refused although each looks harmless.
    ([(tar_info("inner", tarfile.SYMTYPE, "."), b""), (tar_info("inner/x.txt"), b"x")], "through the link 'inner'"),
])
def test_tar_entries_that_escape_or_are_devices_are_refused(tmp_path, members, bad):
    for info, _ in members:
        info.name = info.name.format(tmp=tmp_path)
    archive = make_tar(tmp_path / "bad.tar.gz", [(tar_info("ok.txt"), b"fine"), *members])
    target = tmp_path / "out" / "target"
    with pytest.raises(UnsafeArchive, match=bad.replace(".", r"\.")):
        check_archive(archive)  # what a download runs, before the archive is accepted at all
    with pytest.raises(UnsafeArchive, match=bad.replace(".", r"\.")):
        extract(archive, target)
    assert files_under(tmp_path / "out") == set()
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "outside.txt").exists()
    assert not (tmp_path / "evil-absolute.txt").exists()


def test_tar_link_inside_the_archive_is_kept(tmp_path):
    archive = make_tar(tmp_path / "links.tar.gz", [(tar_info("data/a.txt"), b"alpha"),
                                                   (tar_info("data/b.txt", tarfile.SYMTYPE, "a.txt"), b"")])
    target = extract(archive, tmp_path / "target")
    assert (target / "data/b.txt").is_symlink() and (target / "data/b.txt").read_bytes() == b"alpha"


def test_corrupt_zip_entry_is_named_and_leaves_no_target(tmp_path):
    archive = make_zip(tmp_path / "c.zip", {"a.txt": b"A" * 1000, "b.txt": b"B" * 1000}, zipfile.ZIP_STORED)
    raw = bytearray(archive.read_bytes())
    raw[raw.index(b"B" * 1000) + 10] ^= 0xFF
    archive.write_bytes(bytes(raw))
    for check in (check_zip, check_archive):
        with pytest.raises(CorruptArchive, match="'b.txt'"):
            check(archive)
    with pytest.raises(CorruptArchive, match="'b.txt' is corrupt"):
        extract(archive, tmp_path / "target")
    assert not (tmp_path / "target").exists() and not (tmp_path / ".target.extracting").exists()


def test_archive_errors_are_user_errors_that_also_fail_a_download_check():
    # A stage prints a UserError in one line; a download's check treats a ValueError as bad content.
    for kind in (UnsafeArchive, CorruptArchive):
        assert issubclass(kind, UserError) and issubclass(kind, ValueError)


def test_check_archive_refuses_what_is_neither_zip_nor_tar(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"<html>not found</html>")
    with pytest.raises(CorruptArchive, match="neither a zip nor a tar"):
        check_archive(tmp_path / "x.zip")


def test_an_archive_refused_at_extraction_is_moved_aside_and_says_where(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"ok.txt": b"fine", "../evil.txt": b"evil"})
    evil = archive.read_bytes()
    record_path(archive).write_text("{}")
    with pytest.raises(UnsafeArchive) as err:
        ensure_extracted(archive, tmp_path / "target", "sha-a")
    refused = tmp_path / "refused" / f"a.zip.{hashlib.sha256(evil).hexdigest()[:12]}"
    assert "'../evil.txt' climbs out" in str(err.value) and f"moved to {refused}" in str(err.value)
    assert refused.read_bytes() == evil
    assert "climbs out" in read_json(refused.with_name(refused.name + ".json"))["reason"]
    # Nothing left where the next run would find it "present" and fail on it again.
    assert not archive.exists() and not record_path(archive).exists() and not (tmp_path / "target").exists()


def test_killed_extraction_never_looks_finished_and_is_redone(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"a.txt": b"alpha"})
    leftover = tmp_path / ".target.extracting"
    (leftover / "half").mkdir(parents=True)  # what a killed run leaves: a temporary sibling, no target
    assert not (tmp_path / "target").exists()
    target = ensure_extracted(archive, tmp_path / "target", "sha-a")
    assert files_under(target) == {"a.txt", ".archive.json"}
    assert not leftover.exists()


def test_ensure_extracted_skips_the_same_archive_and_redoes_another(tmp_path):
    target = ensure_extracted(make_zip(tmp_path / "a.zip", {"a.txt": b"alpha"}), tmp_path / "target", "sha-a")
    marker = target / "untouched"
    marker.write_text("x")
    ensure_extracted(tmp_path / "a.zip", target, "sha-a")
    assert marker.exists()  # same archive: not extracted again
    ensure_extracted(make_zip(tmp_path / "b.zip", {"b.txt": b"beta"}), target, "sha-b")
    assert files_under(target) == {"b.txt", ".archive.json"}


def test_extract_member_copies_one_inner_zip(tmp_path):
    inner = make_zip(tmp_path / "inner.zip", {"train/cat.0.jpg": b"jpg"}).read_bytes()
    bundle = make_zip(tmp_path / "bundle.zip", {"train.zip": inner, "test1.zip": b"other"})
    out = extract_member(bundle, "train.zip", tmp_path / "raw" / "train.zip")
    assert out.read_bytes() == inner
    with pytest.raises(ValueError, match="0 entries named 'missing.zip'"):
        extract_member(bundle, "missing.zip", tmp_path / "raw" / "missing.zip")
    assert not (tmp_path / "raw" / "missing.zip").exists()


# ---- extraction limits: checked from the archive's directory before anything is written ---------

def zip_bomb(path: Path, megabytes: int = 4) -> Path:
    """A few MB of zeros: a few kilobytes compressed, about 1,000 times smaller."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("top/zeros.bin", bytes(megabytes << 20))
    return path


def nothing_written(target: Path) -> bool:
    return not target.exists() and not list(target.parent.glob(f".{target.name}*"))


def test_a_zip_bomb_is_refused_by_its_ratio_before_anything_is_written(tmp_path):
    bomb = zip_bomb(tmp_path / "bomb.zip")
    assert bomb.stat().st_size < 50_000
    with pytest.raises(ArchiveTooLarge) as err:
        ensure_extracted(bomb, tmp_path / "out", "sha")
    message = str(err.value)
    assert "bomb.zip: entry 'top/zeros.bin' unpacks to " in message and "over extraction.max_ratio 100" in message
    assert "`dvc exp run -S extraction.max_ratio=" in message and "\n" not in message, message
    assert nothing_written(tmp_path / "out") and bomb.is_file(), "kept: raising the limit needs no new download"
    ensure_extracted(bomb, tmp_path / "out", "sha", Extraction(max_ratio=5000))
    assert (tmp_path / "out" / "top" / "zeros.bin").stat().st_size == 4 << 20


def test_an_archive_over_max_bytes_is_refused_naming_the_limit_and_how_to_raise_it(tmp_path):
    bomb = zip_bomb(tmp_path / "big.zip", megabytes=3)
    with pytest.raises(ArchiveTooLarge, match=r"big.zip unpacks to 3.0 MiB \(3,145,728 bytes\), over "
                                              r"extraction.max_bytes 1,000,000; .*`dvc exp run -S "
                                              r"extraction.max_bytes=3145728`"):
        extract(bomb, tmp_path / "out", limits=Extraction(max_bytes=1_000_000, max_ratio=5000))
    assert nothing_written(tmp_path / "out")


def test_an_archive_larger_than_the_free_disk_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(archives, "free_bytes", lambda path: 1 << 20)
    with pytest.raises(ArchiveTooLarge, match=r"unpacks to 4.0 MiB but the disk under .*out has 1.0 MiB free"):
        extract(zip_bomb(tmp_path / "big.zip"), tmp_path / "out", limits=Extraction(max_ratio=5000))
    assert nothing_written(tmp_path / "out")


def test_a_zip_with_too_many_entries_is_refused(tmp_path):
    many = make_zip(tmp_path / "many.zip", {f"top/{i}.txt": b"x" for i in range(300)})
    with pytest.raises(ArchiveTooLarge, match=r"many.zip has 300 entries \(files and folders\), over "
                                              r"extraction.max_entries 100; .*extraction.max_entries=300`"):
        extract(many, tmp_path / "out", limits=Extraction(max_entries=100))
    assert nothing_written(tmp_path / "out")
    extract(many, tmp_path / "out", limits=Extraction(max_entries=300))


def test_a_tar_is_held_to_the_limits_by_its_headers(tmp_path):
    files = [(tarfile.TarInfo(f"top/{i}.bin"), bytes(1 << 20)) for i in range(3)]
    bomb = make_tar(tmp_path / "zeros.tar.gz", files)
    with pytest.raises(ArchiveTooLarge, match=r"zeros.tar.gz: its content unpacks to .* over extraction.max_ratio"):
        extract(bomb, tmp_path / "out")
    with pytest.raises(ArchiveTooLarge, match=r"zeros.tar.gz has more than 2 entries"):
        extract(bomb, tmp_path / "out", limits=Extraction(max_entries=2, max_ratio=5000))
    assert nothing_written(tmp_path / "out")
    extract(bomb, tmp_path / "out", limits=Extraction(max_ratio=5000))


def test_one_member_taken_from_a_bundle_is_held_to_the_limits(tmp_path):
    with pytest.raises(ArchiveTooLarge, match=r"entry 'top/zeros.bin' unpacks to"):
        extract_member(zip_bomb(tmp_path / "bundle.zip"), "zeros.bin", tmp_path / "zeros.bin")
    assert not (tmp_path / "zeros.bin").exists()


def test_the_real_archives_fit_the_default_limits():
    limits = load_params().extraction
    assert limits == Extraction() and limits.max_entries > 25_000 and limits.max_bytes > 600_000_000
