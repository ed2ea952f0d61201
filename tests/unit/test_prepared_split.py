"""A prepared split is checked against its manifest and the params before training or evaluation uses it."""

from __future__ import annotations

import numpy as np
import pytest

from transferbench.core import paths
from transferbench.core.errors import BadInput
from transferbench.data.datasets import load_split


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "PREPARED", tmp_path)

    def write(array: np.ndarray, rows: int, dataset: str = "captcha") -> None:
        folder = tmp_path / dataset / "test"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "images.npy", array)
        (folder / "manifest.csv").write_text("label,sha256\n" + f"cat,{'0' * 64}\n" * rows)
    return write


def test_a_matching_split_loads(prepared):
    prepared(np.zeros((2, 8, 16, 3), dtype=np.uint8), 2)
    images, manifest = load_split("captcha", "test", (8, 16, 3))
    assert images.shape == (2, 8, 16, 3) and len(manifest) == 2


@pytest.mark.parametrize("array, rows, shape, fragment", [
    (np.zeros((2, 8, 16, 3), dtype=np.uint8), 3, None, "holds 2 images but "),
    (np.zeros((2, 8, 16, 3), dtype=np.uint8), 2, (80, 160, 3), "holds images of 2x8x16x3 (n x height x width x 3), "
                                                              "but params.yaml's captcha section asks for 80x160x3"),
    (np.zeros((2, 8, 16, 3), dtype=np.float32), 2, None, "holds float32 2x8x16x3, not uint8 images"),
    (np.zeros((2, 8, 16), dtype=np.uint8), 2, None, "holds uint8 2x8x16, not uint8 images"),
])
def test_a_split_that_does_not_match_names_the_file_and_the_stage(prepared, array, rows, shape, fragment):
    prepared(array, rows)
    with pytest.raises(BadInput) as err:
        load_split("captcha", "test", shape)
    assert fragment in str(err.value)
    assert "captcha/test/images.npy " in str(err.value)
    assert str(err.value).endswith("rerun `dvc repro generate_captcha`")


def test_a_photo_dataset_names_its_prepare_stage(prepared):
    prepared(np.zeros((2, 8, 16, 3), dtype=np.uint8), 1, dataset="pets")
    with pytest.raises(BadInput, match=r"rerun `dvc repro prepare@pets`$"):
        load_split("pets", "test")
