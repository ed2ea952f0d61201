"""The validation stage on small prepared datasets the tests make: one good, and one per kind of fault."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stages.validate import main
from transferbench.core import paths
from transferbench.core.errors import ConfigError
from transferbench.data.expectations import build_suites
from transferbench.data.validation import ValidationFailed, finish, image_stats, validate

SPLITS = paths.SPLITS
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
VALUES = {"train": 8, "validation": 4, "test": 4, "width": 12, "height": 10, "length": 6,
          "alphabet": ALPHABET, "workers": 0}


def write_split(root: Path, split: str, images: np.ndarray, labels: list[str],
                hashes: list[str] | None = None) -> None:
    """Write one split in the prepared layout; sha256 of each image's bytes unless ``hashes`` is given."""
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", images)
    if hashes is None:
        hashes = [hashlib.sha256(image.tobytes()).hexdigest() for image in images]
    pd.DataFrame({"label": labels, "sha256": hashes}).to_csv(folder / "manifest.csv", index=False)


def read_split(root: Path, split: str) -> tuple[np.ndarray, list[str]]:
    images = np.load(root / split / "images.npy")
    labels = pd.read_csv(root / split / "manifest.csv", dtype=str, keep_default_na=False)["label"].tolist()
    return images, labels


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    """A valid captcha dataset: random-noise images, unique random labels, correct hashes."""
    rng = np.random.default_rng(0)
    root = tmp_path / "prepared" / "captcha"
    total = sum(VALUES[s] for s in SPLITS)
    labels: list[str] = []
    while len(labels) < total:
        label = "".join(rng.choice(list(ALPHABET), VALUES["length"]))
        if label not in labels:
            labels.append(label)
    start = 0
    for split in SPLITS:
        n = VALUES[split]
        images = rng.integers(0, 256, (n, VALUES["height"], VALUES["width"], 3), dtype=np.uint8)
        write_split(root, split, images, labels[start:start + n])
        start += n
    return root


def run(prepared: Path, tmp_path: Path, values: dict = VALUES):
    report = tmp_path / "reports" / "captcha" / "validation"
    return validate("captcha", prepared, values, report), report


def failures(summary) -> set[tuple]:
    """(suite, expectation type, column, split condition) of every failed expectation."""
    return {(e["suite"], e["type"], e["kwargs"].get("column", e["kwargs"].get("column_A")),
             e["kwargs"].get("row_condition")) for e in summary.failed()}


def assert_stage_fails(summary, report: Path, caplog, *needles: str) -> str:
    """The stage fails (exit 1 through the CLI) after logging each failure; the reports exist all the same."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="transferbench"), pytest.raises(ValidationFailed) as failed:
        finish(summary, report)
    assert "expectations FAILED" in str(failed.value) and str(report / "data_docs" / "index.html") in str(failed.value)
    assert (report / "data_docs" / "index.html").is_file()
    assert json.loads((report / "summary.json").read_text())["success"] is False
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    for needle in needles:
        assert needle in text, text
    return text


def test_valid_data_passes_and_summary_is_deterministic(prepared, tmp_path, caplog):
    summary, report = run(prepared, tmp_path)
    assert summary.success, summary.failed()
    assert (report / "data_docs" / "index.html").is_file()
    assert (report / "results.json").is_file()
    first = (report / "summary.json").read_bytes()
    # Every kind of check ran, not an empty suite that trivially passes.
    assert {e["suite"] for e in summary.expectations} == {"manifest", "splits", "images"}
    assert len(summary.expectations) >= 20

    again, _ = run(prepared, tmp_path)
    assert again.success
    assert (report / "summary.json").read_bytes() == first
    assert [p.name for p in report.parent.iterdir()] == ["validation"]  # no half-written leftovers
    with caplog.at_level(logging.INFO, logger="transferbench"):
        finish(again, report)
    assert "passed" in caplog.text


def test_split_size_differs_from_params(prepared, tmp_path, caplog):
    summary, report = run(prepared, tmp_path, {**VALUES, "validation": 5})
    assert failures(summary) == {
        ("splits", "expect_column_values_to_be_in_set", "rows", "split == 'validation'"),
        ("splits", "expect_column_values_to_be_in_set", "images", "split == 'validation'"),
    }
    assert_stage_fails(summary, report, caplog, "validation has 5 images", "value_set=[5]")


def test_manifest_shorter_than_images(prepared, tmp_path, caplog):
    images, labels = read_split(prepared, "test")
    hashes = [hashlib.sha256(image.tobytes()).hexdigest() for image in images]
    write_split(prepared, "test", images, labels[:-1], hashes[:-1])
    summary, report = run(prepared, tmp_path)
    assert failures(summary) == {
        ("splits", "expect_column_pair_values_to_be_equal", "images", None),
        ("splits", "expect_column_values_to_be_in_set", "rows", "split == 'test'"),
        ("images", "expect_column_pair_values_to_be_equal", "sha256", None),
    }
    assert_stage_fails(summary, report, caplog, "one manifest row per image")


def test_label_in_two_splits(prepared, tmp_path, caplog):
    _, train_labels = read_split(prepared, "train")
    images, labels = read_split(prepared, "test")
    write_split(prepared, "test", images, [train_labels[0], *labels[1:]])
    summary, report = run(prepared, tmp_path)
    assert failures(summary) == {("manifest", "expect_column_values_to_be_unique", "label", None)}
    assert_stage_fails(summary, report, caplog, "labels are unique across all splits", train_labels[0])


def test_duplicate_label_within_a_split(prepared, tmp_path, caplog):
    images, labels = read_split(prepared, "train")
    write_split(prepared, "train", images, [labels[0], labels[0], *labels[2:]])
    summary, report = run(prepared, tmp_path)
    assert ("manifest", "expect_column_values_to_be_unique", "label", "split == 'train'") in failures(summary)
    assert ("manifest", "expect_column_values_to_be_unique", "label", "split == 'test'") not in failures(summary)
    assert_stage_fails(summary, report, caplog, "labels are unique within train", "train/1")


@pytest.mark.parametrize("bad", ["ABC12", "ABC1234", "abc123", "ABC-12"])
def test_label_breaks_the_pattern(prepared, tmp_path, bad, caplog):
    images, labels = read_split(prepared, "validation")
    write_split(prepared, "validation", images, [labels[0], bad, *labels[2:]])
    summary, report = run(prepared, tmp_path)
    assert failures(summary) == {("manifest", "expect_column_values_to_match_regex", "label", None)}
    assert_stage_fails(summary, report, caplog, f"^[{ALPHABET}]{{6}}$", bad, "validation/1")


def test_blank_images(prepared, tmp_path, caplog):
    images, labels = read_split(prepared, "train")
    images[2] = 7       # constant: std 0, but a mean that passes
    images[5] = 255     # all white: std 0 and a mean outside (1, 254)
    write_split(prepared, "train", images, labels)
    summary, report = run(prepared, tmp_path)
    assert failures(summary) == {
        ("images", "expect_column_values_to_be_between", "std", None),
        ("images", "expect_column_values_to_be_between", "mean", None),
    }
    blank = next(e for e in summary.failed() if e["kwargs"]["column"] == "std")
    assert blank["observed"]["unexpected"] == 2
    assert blank["observed"]["at"] == ["train/2", "train/5"]
    assert_stage_fails(summary, report, caplog, "no blank image", "train/2")


def test_wrong_image_shape(prepared, tmp_path, caplog):
    rng = np.random.default_rng(1)
    _, labels = read_split(prepared, "test")
    images = rng.integers(0, 256, (VALUES["test"], VALUES["height"] + 1, VALUES["width"], 3), dtype=np.uint8)
    write_split(prepared, "test", images, labels)
    summary, report = run(prepared, tmp_path)
    assert failures(summary) == {("splits", "expect_column_values_to_be_in_set", "height", None)}
    assert_stage_fails(summary, report, caplog, f"images are {VALUES['height']} high", "11")


def test_wrong_dtype_and_grayscale(prepared, tmp_path):
    rng = np.random.default_rng(2)
    _, labels = read_split(prepared, "test")
    images = rng.uniform(0, 255, (VALUES["test"], VALUES["height"], VALUES["width"])).astype(np.float32)
    write_split(prepared, "test", images, labels)
    summary, _ = run(prepared, tmp_path)
    assert failures(summary) == {("splits", "expect_column_values_to_be_in_set", c, None)
                                 for c in ("ndim", "channels", "dtype")}


def test_manifest_rows_out_of_order(prepared, tmp_path):
    images, labels = read_split(prepared, "train")
    hashes = [hashlib.sha256(image.tobytes()).hexdigest() for image in images]
    hashes[0], hashes[1] = hashes[1], hashes[0]
    write_split(prepared, "train", images, labels, hashes)
    summary, _ = run(prepared, tmp_path)
    assert failures(summary) == {("images", "expect_column_pair_values_to_be_equal", "sha256", None)}


def test_main_validates_data_outside_the_pipeline_and_exits_nonzero(prepared, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(VALUES))
    report = tmp_path / "report"
    args = ["captcha", "--prepared", str(prepared), "--report", str(report), "--values", str(values)]
    main(args)
    assert json.loads((report / "summary.json").read_text())["success"]

    values.write_text(yaml.safe_dump({**VALUES, "train": 9}))
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert str(exit_info.value.code).startswith("validate@captcha: error: captcha: ")  # printed; exit status 1
    assert "expectations FAILED" in str(exit_info.value.code)


def test_unknown_dataset_names_the_valid_ones():
    with pytest.raises(ConfigError, match="captcha"):
        build_suites("nope", VALUES)


@pytest.mark.parametrize("shape", [(7, 10, 12, 3), (5, 300, 300, 3)])
def test_image_stats_match_numpy(shape, tmp_path):
    images = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    images[1] = 42
    np.save(tmp_path / "images.npy", images)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    stats = image_stats(mapped, chunk=3)  # several chunks, the last one short; pages unmapped as it goes
    assert stats.equals(image_stats(images, chunk=2, workers=1))
    flat = images.reshape(len(images), -1).astype(np.float64)
    np.testing.assert_allclose(stats["mean"], flat.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats["std"], flat.std(axis=1), rtol=1e-9)
    assert stats["std"][1] == 0.0
    assert stats["sha256"].tolist() == [hashlib.sha256(i.tobytes()).hexdigest() for i in images]
