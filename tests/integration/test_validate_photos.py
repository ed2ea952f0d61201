"""The photo datasets' great-expectations suites: what passes, and each failure they must catch."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.fixture_data import write_all, write_prepared_photos
from transferbench.core.files import read_json, write_json
from transferbench.data.datasets import DATASETS
from transferbench.data.validation import validate
from transferbench.study.params import load_params

VALUES = {"height": 24, "width": 32, "workers": 0, "tolerance": 0.25,
          "source": {"competition": "dogs-vs-cats"}, "train": 8, "validation": 4, "test": 4}


@pytest.fixture
def prepared(tmp_path):
    return write_prepared_photos(tmp_path / "prepared", "dogs_vs_cats", VALUES)


def failed_checks(summary) -> list[str]:
    return [e["check"] for e in summary.failed()]


def test_fixture_passes_and_reports_class_balance(prepared, tmp_path):
    summary = validate("dogs_vs_cats", prepared, VALUES, tmp_path / "report")
    assert summary.success, failed_checks(summary)
    saved = read_json(tmp_path / "report" / "summary.json")
    assert saved["class_balance"] == {"train": {"cat": 4, "dog": 4}, "validation": {"cat": 2, "dog": 2},
                                      "test": {"cat": 2, "dog": 2}}
    assert (tmp_path / "report" / "data_docs" / "index.html").is_file()


def _drop_rows(folder, keep):
    images = np.load(folder / "images.npy")
    manifest = pd.read_csv(folder / "manifest.csv", dtype=str, keep_default_na=False)
    np.save(folder / "images.npy", images[keep])
    manifest.iloc[keep].to_csv(folder / "manifest.csv", index=False)


def test_a_split_that_lost_more_than_the_tolerance_fails(prepared, tmp_path):
    _drop_rows(prepared / "train", [0, 1, 4, 5, 6])   # 5 of the 8 expected; 25% tolerance allows 6
    summary = validate("dogs_vs_cats", prepared, VALUES, tmp_path / "report")
    assert failed_checks(summary) == ["train has 6-8 images"]


def test_a_loss_within_tolerance_passes(prepared, tmp_path):
    _drop_rows(prepared / "train", [0, 1, 2, 4, 5, 6])  # 6 of 8
    assert validate("dogs_vs_cats", prepared, VALUES, tmp_path / "report").success


def test_a_class_missing_from_a_split_fails(prepared, tmp_path):
    _drop_rows(prepared / "test", [0, 1])  # cats only
    assert failed_checks(validate("dogs_vs_cats", prepared, {**VALUES, "test": 2}, tmp_path / "report")) == [
        "every class appears in test"]


def test_a_split_short_of_its_params_fails_whatever_meta_expects(prepared, tmp_path):
    # Preparation once wrote the short split's own size as expected: the loss was invisible.
    _drop_rows(prepared / "test", [0, 1, 2])
    meta = read_json(prepared / "meta.json")
    write_json(prepared / "meta.json", {**meta, "expected": {**meta["expected"], "test": 3}})
    assert failed_checks(validate("dogs_vs_cats", prepared, {**VALUES, "tolerance": 0.0},
                                  tmp_path / "report")) == ["test has 4-4 images"]


def test_unknown_label_fails(prepared, tmp_path):
    path = prepared / "validation" / "manifest.csv"
    path.write_text(path.read_text().replace("\ncat,", "\ncow,", 1))
    assert "labels are classes of dogs_vs_cats: cat, dog" in failed_checks(
        validate("dogs_vs_cats", prepared, VALUES, tmp_path / "report"))


def test_a_manifest_without_real_formats_fails(prepared, tmp_path):
    path = prepared / "train" / "manifest.csv"
    path.write_text(path.read_text().replace(",JPEG,", ",,", 1))
    assert failed_checks(validate("dogs_vs_cats", prepared, VALUES, tmp_path / "report")) == [
        "every image's real format is recorded (Pillow's name, or pixels)"]


def test_the_same_image_in_two_splits_fails(prepared, tmp_path):
    train = np.load(prepared / "train" / "images.npy")
    test = np.load(prepared / "test" / "images.npy")
    test[0] = train[0]
    np.save(prepared / "test" / "images.npy", test)
    manifest = pd.read_csv(prepared / "test" / "manifest.csv", dtype=str, keep_default_na=False)
    manifest.loc[0, "sha256"] = pd.read_csv(prepared / "train" / "manifest.csv", dtype=str)["sha256"][0]
    manifest.to_csv(prepared / "test" / "manifest.csv", index=False)
    assert failed_checks(validate("dogs_vs_cats", prepared, VALUES, tmp_path / "report")) == [
        "no image appears twice, in any split"]


def test_meta_without_expected_counts_fails_rather_than_passing_vacuously(tmp_path):
    # cats_and_dogs_filtered's train size is the source's, known only from meta.json.
    values = {**VALUES, "source": {"urls": ["https://example.invalid/a.zip"], "sha256": None}}
    del values["train"]
    prepared = write_prepared_photos(tmp_path / "prepared", "cats_and_dogs_filtered", values)
    meta = read_json(prepared / "meta.json")
    del meta["expected"]
    write_json(prepared / "meta.json", meta)
    failed = failed_checks(validate("cats_and_dogs_filtered", prepared, values, tmp_path / "report"))
    assert "train has 1-0 images" in failed
    assert not {"validation has 3-4 images", "test has 3-4 images"} & set(failed)


def test_cli_validates_data_outside_the_pipeline(prepared, tmp_path, caplog):
    from stages.validate import main

    values_file = tmp_path / "values.yaml"
    values_file.write_text(json.dumps(VALUES))  # JSON is YAML
    with caplog.at_level(logging.INFO, logger="transferbench"):
        main(["dogs_vs_cats", "--prepared", str(prepared), "--report", str(tmp_path / "r"),
              "--values", str(values_file)])
    assert "all 24 expectations passed" in caplog.text
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({**VALUES, "tolerance": 2}))
    with pytest.raises(SystemExit, match="^validate@dogs_vs_cats: error: .*tolerance must be <= 1, got 2"):
        main(["dogs_vs_cats", "--prepared", str(prepared), "--values", str(bad)])


def test_ci_fixtures_cover_every_photo_dataset_and_pass(tmp_path):
    # .ci/run validates what `python -m tests.fixture_data` writes: an empty list would check nothing.
    written = write_all(tmp_path, load_params())
    assert written == [n for n in DATASETS.names() if DATASETS.get(n).source]
    for name in written:
        values = yaml.safe_load((tmp_path / f"{name}.params.yaml").read_text())
        summary = validate(name, tmp_path / name, values, tmp_path / "reports" / name)
        assert summary.success, (name, failed_checks(summary))
