"""Seeded CAPTCHA generation: reproducible bytes, disjoint labels, the prepared layout, resuming."""

from __future__ import annotations

import copy
import hashlib
import re
import secrets
from pathlib import Path

import numpy as np
import pytest
import yaml
from captcha import image as captcha_image

from transferbench.core import paths
from transferbench.core.errors import ConfigError
from transferbench.data import captcha
from transferbench.data import generation as generate_captcha
from transferbench.data.datasets import DATASETS, captcha_targets, read_manifest
from transferbench.study.params import check_params

VALUES = {"train": 20, "validation": 5, "test": 5, "width": 160, "height": 80, "length": 6,
          "alphabet": "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", "workers": 0}
CHUNK = 4  # several chunks per split, so chunking, ordering and resuming are exercised
N_CHUNKS = 5 + 2 + 2  # ceil(20 / 4) + ceil(5 / 4) + ceil(5 / 4)


def make(root: Path, name: str, seed: int = 42, workers: int = 1, chunk_size: int = CHUNK) -> Path:
    out = root / name / "captcha"
    generate_captcha.generate(out, root / name / "work", VALUES, seed, workers, chunk_size=chunk_size)
    return out


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One finished run with the default values, seed 42, one worker."""
    return make(tmp_path_factory.mktemp("reference"), "a")


def test_same_params_give_identical_bytes_whatever_the_workers_or_chunks(tmp_path, reference):
    expected = digests(reference)
    assert sorted(expected) == ["meta.json", *(f"{s}/{f}" for s in sorted(paths.SPLITS)
                                               for f in ("images.npy", "manifest.csv"))]
    assert digests(make(tmp_path, "again")) == expected
    assert digests(make(tmp_path, "two_workers", workers=2)) == expected
    assert digests(make(tmp_path, "other_chunks", chunk_size=7)) == expected


def test_another_seed_gives_other_labels_and_images(tmp_path, reference):
    other = make(tmp_path, "seed7", seed=7)
    first, second = digests(reference), digests(other)
    assert all(first[name] != second[name] for name in first)
    assert not set(read_manifest(reference / "train/manifest.csv").label) & set(
        read_manifest(other / "train/manifest.csv").label)


def test_layout_shapes_hashes_and_labels(reference):
    meta = yaml.safe_load((reference / "meta.json").read_text())  # JSON is YAML
    assert meta == {"dataset": "captcha", "image_shape": [80, 160, 3],
                    "splits": {"train": 20, "validation": 5, "test": 5},
                    "alphabet": VALUES["alphabet"], "length": 6, "seed": 42, "generator": "captcha==0.7.1"}
    pattern = re.compile(f"^[{re.escape(VALUES['alphabet'])}]{{6}}$")
    seen: set[str] = set()
    for split in paths.SPLITS:
        images = np.load(reference / split / "images.npy", mmap_mode="r")
        assert images.dtype == np.uint8 and images.shape == (meta["splits"][split], 80, 160, 3)
        lines = (reference / split / "manifest.csv").read_text().splitlines()
        assert lines[0] == "label,sha256"
        manifest = read_manifest(reference / split / "manifest.csv")
        assert list(manifest.sha256) == [hashlib.sha256(img.tobytes()).hexdigest() for img in images]
        assert all(pattern.match(label) for label in manifest.label)
        assert not seen & set(manifest.label) and manifest.label.is_unique
        seen |= set(manifest.label)
        # Rendered, not blank: every image has dark text on a light background.
        assert (images.reshape(len(images), -1).min(axis=1) < 200).all()
        targets = captcha_targets(manifest, DATASETS.get("captcha").section(VALUES))
        assert targets.shape == (len(manifest), 6)
        decoded = ["".join(VALUES["alphabet"][i] for i in row) for row in targets]
        assert decoded == list(manifest.label)


def test_an_image_depends_only_on_its_key(reference):
    images = np.load(reference / "validation" / "images.npy", mmap_mode="r")
    manifest = read_manifest(reference / "validation" / "manifest.csv")
    again = captcha.render(manifest.label[3], captcha.image_key(42, "validation", 3), 160, 80)
    np.testing.assert_array_equal(again, images[3])
    assert captcha_image.secrets is secrets  # the substitute is gone after each image


def test_secrets_restored_after_an_error():
    with pytest.raises(KeyError):
        with captcha.seeded_captcha("k"):
            assert captcha_image.secrets is not secrets
            raise KeyError("drawing failed")
    assert captcha_image.secrets is secrets


def test_draw_labels_tops_up_repeats_and_rejects_impossible_counts():
    counts = {"train": 10, "validation": 3, "test": 3}  # 16 of the 27 strings: repeats are certain
    labels = captcha.draw_labels(0, counts, "ABC", 3)
    assert labels == captcha.draw_labels(0, counts, "ABC", 3)
    assert [len(labels[s]) for s in counts] == [10, 3, 3]
    everything = [x for s in counts for x in labels[s]]
    assert len(set(everything)) == 16 and all(re.fullmatch("[ABC]{3}", x) for x in everything)
    assert labels != captcha.draw_labels(1, counts, "ABC", 3)
    with pytest.raises(ValueError, match=r"28 distinct labels .* 3\*\*3"):
        captcha.draw_labels(0, {"train": 28, "validation": 0, "test": 0}, "ABC", 3)


class CountingWorker:
    """Stands in for captcha.render_chunk; fails on call number ``fail_on`` (1-based)."""

    def __init__(self, fail_on: int | None = None):
        self.calls = 0
        self.fail_on = fail_on
        self.real = captcha.render_chunk

    def __call__(self, chunk):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("simulated kill")
        return self.real(chunk)


def test_killed_run_leaves_old_output_alone_and_resumes(tmp_path, reference, monkeypatch):
    out, work = tmp_path / "run" / "captcha", tmp_path / "run" / "work"
    out.mkdir(parents=True)
    (out / "old.txt").write_text("previous output")
    failing = CountingWorker(fail_on=2)
    monkeypatch.setattr(captcha, "render_chunk", failing)
    with pytest.raises(RuntimeError, match="simulated kill"):
        generate_captcha.generate(out, work, VALUES, 42, 1, chunk_size=CHUNK)
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert len(list((work / "done").glob("*.json"))) == 1

    resumed = CountingWorker()
    monkeypatch.setattr(captcha, "render_chunk", resumed)
    generate_captcha.generate(out, work, VALUES, 42, 1, chunk_size=CHUNK)
    assert resumed.calls == N_CHUNKS - 1
    assert digests(out) == digests(reference)
    assert not work.exists()


def test_changed_params_do_not_reuse_chunks(tmp_path, monkeypatch):
    work = tmp_path / "work"
    monkeypatch.setattr(captcha, "render_chunk", CountingWorker(fail_on=3))
    with pytest.raises(RuntimeError):
        generate_captcha.generate(tmp_path / "out", work, VALUES, 42, 1, chunk_size=CHUNK)
    rerun = CountingWorker()
    monkeypatch.setattr(captcha, "render_chunk", rerun)
    generate_captcha.generate(tmp_path / "out", work, VALUES, 7, 1, chunk_size=CHUNK)
    assert rerun.calls == N_CHUNKS
    monkeypatch.undo()
    assert digests(tmp_path / "out") == digests(make(tmp_path, "fresh7", seed=7))


def test_fingerprint_follows_the_output_not_the_worker_count():
    base = generate_captcha.fingerprint(VALUES, 42)
    assert generate_captcha.fingerprint({**VALUES, "workers": 2}, 42) == base
    assert generate_captcha.fingerprint(VALUES, 43) != base
    assert generate_captcha.fingerprint({**VALUES, "train": 21}, 42) != base


@pytest.mark.parametrize("key, value, message", [
    ("train", 0, r"captcha\.train must be >= 1, got 0"),
    ("alphabet", "ABCA", r"captcha\.alphabet .*repeated.*'ABCA'"),
    ("colour", "red", r"unknown key captcha\.colour"),
    ("length", 2, r"captcha: \d+ CAPTCHAs need more distinct strings than 36\*\*2"),
])
def test_config_rejects_bad_captcha_params(key, value, message):
    params = yaml.safe_load(paths.PARAMS.read_text(encoding="utf-8"))
    check_params(copy.deepcopy(params))  # the file as committed is valid
    params["captcha"][key] = value
    with pytest.raises(ConfigError, match=message):
        check_params(params)


def test_images_that_would_not_fit_on_the_disk_are_refused_before_work(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"captcha: 30 images of 160x80x3 \(train 20, validation 5, test 5\) "
                                          r"need 1\.1 MiB under .*work, but that disk has 1\.0 KiB free"):
        generate_captcha.generate(tmp_path / "out", tmp_path / "work", VALUES, 42, 1, free_bytes=1024)
    # The default asks the disk itself: 200,000 images of 8000x8000 would need 35 TiB.
    huge = {**VALUES, "train": 200_000, "height": 8000, "width": 8000}
    with pytest.raises(ConfigError, match=r"200,010 images of 8000x8000x3 .* need 3\d\.\d TiB"):
        generate_captcha.generate(tmp_path / "out", tmp_path / "work", huge, 42, 1)
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


def test_generate_checks_values_before_work(tmp_path):
    with pytest.raises(ConfigError, match=r"captcha\.width must be an integer, got '160'"):
        generate_captcha.generate(tmp_path / "out", tmp_path / "work", {**VALUES, "width": "160"}, 42, 1)
    assert not (tmp_path / "work").exists()
    assert DATASETS.get("captcha").image_shape(VALUES) == (80, 160, 3)
