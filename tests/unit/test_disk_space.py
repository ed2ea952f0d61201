"""Arrays that would not fit on the disk are a config error, counted before any work."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from transferbench.config import disk
from transferbench.core import files
from transferbench.core.errors import ConfigError

Usage = collections.namedtuple("Usage", "total used free")
COUNTS = {"train": 1000, "validation": 100, "test": 100}
SHAPE = (224, 224, 3)
NEEDED = 1200 * 224 * 224 * 3  # 172 MiB


def test_needed_bytes_are_every_split_at_the_stored_shape():
    assert disk.array_bytes(COUNTS, SHAPE) == NEEDED


def test_free_space_comes_from_the_disk_of_the_nearest_existing_folder(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: asked.append(path) or Usage(0, 0, NEEDED))
    with pytest.raises(ConfigError) as err:
        disk.check_fits("cifar10", COUNTS, SHAPE, tmp_path / "tmp" / "prepare" / "cifar10-0123")
    assert asked == [tmp_path]
    assert str(err.value).startswith("cifar10: 1,200 images of 224x224x3 (train 1,000, validation 100, test 100) "
                                     "need 172.3 MiB under ")
    assert "that disk has 172.3 MiB free (keeping 256.0 MiB spare)" in str(err.value)
    assert "cifar10.height / cifar10.width" in str(err.value)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: Usage(0, 0, NEEDED + disk.MARGIN))
    assert disk.check_fits("cifar10", COUNTS, SHAPE, tmp_path / "work") == NEEDED


def test_a_resumed_run_counts_what_its_folder_already_holds(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    np.save(work / "images.npy", np.ones(4 * 2**20, dtype=np.uint8))  # 4 MiB already written
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: Usage(0, 0, disk.MARGIN + 2**20))
    with pytest.raises(ConfigError):
        disk.check_fits("captcha", {"train": 1}, (2**11, 2**11, 1), tmp_path / "elsewhere")
    disk.check_fits("captcha", {"train": 1}, (2**11, 2**11, 1), work)  # 4 MiB needed: the 4 MiB it holds + 1
