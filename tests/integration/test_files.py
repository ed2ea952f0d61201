"""What transferbench.core.files promises about the disk: arrays own their blocks before anyone maps them, a
full disk is a one-line error naming the file (never SIGBUS, never a worker pool that broke), files and folders
follow the umask, and output folders are known to be writable before work."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from transferbench.core import files
from transferbench.core.errors import NoSpace, NotWritable
from transferbench.core.parallel import map_chunks

ROOT = Path(__file__).resolve().parents[2]
MiB = 2**20


def run_python(code: str, *, fsize_limit: int | None = None) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter; with ``fsize_limit``, a file size limit (as `ulimit -f`) that makes
    writes past it fail with EFBIG, the way a full disk fails them with ENOSPC, without root."""
    prelude = ""
    if fsize_limit is not None:
        prelude = ("import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                   f"resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize_limit}, {fsize_limit}))\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def test_a_new_array_owns_its_blocks_so_writes_through_a_map_cannot_hit_a_full_disk(tmp_path):
    path = tmp_path / "images.npy"
    files.create_zeros_npy(path, (64, 64, 64, 3))
    nbytes = 64 * 64 * 64 * 3
    assert path.stat().st_blocks * 512 >= nbytes  # not a sparse file
    assert np.load(path, mmap_mode="r").shape == (64, 64, 64, 3)


def test_an_unreserved_array_is_reserved_row_range_by_range(tmp_path):
    path = tmp_path / "images.npy"
    files.create_zeros_npy(path, (64, 64, 64, 3), reserve=False)
    assert path.stat().st_blocks * 512 < 64 * 64 * 3 * 8
    array = np.load(path, mmap_mode="r")
    row = array.strides[0]
    files.allocate(path, array.offset + 8 * row, 16 * row)
    assert path.stat().st_blocks * 512 >= 16 * row


def test_an_array_that_cannot_fit_is_an_error_naming_the_file_and_the_sizes(tmp_path):
    target = tmp_path / "images.npy"
    result = run_python(f"""
        from transferbench.core import files
        from transferbench.core.errors import NoSpace
        try:
            files.create_zeros_npy({str(target)!r}, (4, 1024, 1024, 1))
        except NoSpace as err:
            print("NoSpace:", err)
        """, fsize_limit=MiB)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"NoSpace: cannot write 4.0 MiB for {target}: the file would exceed the file "
                                    "size limit"), result.stdout
    assert "free there); free some space on that disk and rerun the stage" in result.stdout
    assert list(tmp_path.iterdir()) == []  # no partial file left


def test_a_failed_atomic_write_names_its_file_and_leaves_the_old_one(tmp_path):
    target = tmp_path / "manifest.csv"
    target.write_text("old\n")
    result = run_python(f"""
        from transferbench.core import files
        from transferbench.core.errors import NoSpace
        try:
            files.write_text({str(target)!r}, "x" * {2 * MiB})
        except NoSpace as err:
            print("NoSpace:", err)
        """, fsize_limit=MiB)
    assert result.stdout.startswith(f"NoSpace: cannot write {target}: "), (result.stdout, result.stderr)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.csv"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root; the file size limit tests "
                    "above cover the same path without it")
def test_a_real_full_disk_is_an_error_at_creation_not_a_bus_error(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        result = run_python(f"""
            import numpy as np
            from transferbench.core import files
            from transferbench.core.errors import NoSpace
            path = {str(mount / 'images.npy')!r}
            try:
                files.create_zeros_npy(path, (4, 1024, 1024, 1))
            except NoSpace as err:
                print("NoSpace:", err)
            else:
                np.lib.format.open_memmap(path, mode="r+")[:] = 1  # what a worker does: SIGBUS on a full disk
                print("written")
            """)
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.startswith("NoSpace: cannot write 4.0 MiB for "), result.stdout
    assert "no space left on the disk" in result.stdout


def fill_up(path: str) -> str:
    """A worker's write that finds the disk full."""
    with files.space_checked(path, 10 * MiB):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_in_a_worker_comes_back_as_the_same_error_not_a_broken_pool(tmp_path):
    with pytest.raises(NoSpace, match=r"cannot write 10.0 MiB for .*chunk-[01].npy: no space left on the disk"):
        list(map_chunks(fill_up, [str(tmp_path / "chunk-0.npy"), str(tmp_path / "chunk-1.npy")], workers=2))


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_written_files_and_folders_follow_the_umask(tmp_path, mask, file_mode, dir_mode):
    old = os.umask(mask)
    try:
        files.write_json(tmp_path / "meta.json", {"a": 1})
        files.create_zeros_npy(tmp_path / "images.npy", (2, 4, 4, 3))
        files.create_zeros_npy(tmp_path / "empty.npy", (0, 4, 4, 3))
        folder = files.temp_dir(tmp_path / "report")
        assert files.umask() == mask
    finally:
        os.umask(old)
    for name in ("meta.json", "images.npy", "empty.npy"):
        assert (tmp_path / name).stat().st_mode & 0o777 == file_mode, name
    assert folder.stat().st_mode & 0o777 == dir_mode


def test_an_output_folder_blocked_by_a_file_is_found_before_work(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(NotWritable, match=r"cannot create .*data/prepared/captcha: .*data is a file, not a folder"):
        files.check_writable(tmp_path / "reports", tmp_path / "data" / "prepared" / "captcha")
    files.check_writable(tmp_path / "reports" / "new", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing created, no probe left


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the file-in-the-way test "
                    "covers the check as root")
def test_a_read_only_output_folder_is_found_before_work(tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(NotWritable, match=r"cannot write to .*reports \(to create .*reports/pets in\): "
                                              r"Permission denied; make it writable"):
            files.check_writable(folder / "pets")
    finally:
        folder.chmod(0o755)


def test_numpys_short_write_counts_as_a_full_disk_and_other_errors_pass_through(tmp_path):
    with pytest.raises(NoSpace, match=r"cannot write .*pixels.npy: the disk is full or the file size limit"):
        with files.space_checked(tmp_path / "pixels.npy"):
            raise OSError("4800 requested and 1920 written")  # np.save's tofile, without an errno
    with pytest.raises(OSError, match="Input/output error"):
        with files.space_checked(tmp_path / "pixels.npy"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
