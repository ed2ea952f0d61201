"""Seeded CAPTCHA generation: reproducible bytes, disjoint labels, the prepared layout, resuming."""

from __future__ import annotations

import copy
import hashlib
import logging
import re
import secrets
import typing
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import yaml
from captcha import image as captcha_image

from transferbench.core import paths
from transferbench.core.errors import ConfigError
from transferbench.core.files import size_text
from transferbench.data import captcha
from transferbench.data import generation as generate_captcha
from transferbench.data.datasets import DATASETS, CaptchaParams, captcha_targets, read_manifest
from transferbench.study.params import check_params

VALUES = {"train": 20, "validation": 5, "test": 5, "width": 160, "height": 80, "length": 6,
          "alphabet": "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", "workers": 0}
CHUNK = 4  # several chunks per split, so chunking, ordering and resuming are exercised
N_CHUNKS = 5 + 2 + 2  # ceil(20 / 4) + ceil(5 / 4) + ceil(5 / 4)


def make(root: Path, name: str, seed: int = 42, workers: int = 1, chunk_size: int = CHUNK,
         values: dict | None = None) -> Path:
    out = root / name / "captcha"
    generate_captcha.generate(out, root / name / "work", values or VALUES, seed, workers, chunk_size=chunk_size)
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
                    "alphabet": VALUES["alphabet"], "length": 6, "seed": 42, "style": "seed000",
                    "generator": f"pillow=={version('pillow')} seed000/1"}
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
    again = captcha.render(manifest.label[3], captcha.image_key(42, "validation", 3), 160, 80, style="seed000")
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
    assert generate_captcha.fingerprint({**VALUES, "style": "plain"}, 42) != base


@pytest.mark.parametrize("key, value, message", [
    ("train", 0, r"captcha\.train must be >= 1, got 0"),
    ("alphabet", "ABCA", r"captcha\.alphabet .*repeated.*'ABCA'"),
    ("colour", "red", r"unknown key captcha\.colour"),
    ("length", 2, r"captcha: \d+ CAPTCHAs need more distinct strings than 36\*\*2"),
    ("style", "bogus", r"^captcha\.style is 'bogus'; accepted: seed000, plain$"),
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
    # The default asks the disk itself: 2,000,000 images of 1024x1024 (the largest side) would need 5.7 TiB.
    huge = {**VALUES, "train": 2_000_000, "height": 1024, "width": 1024}
    with pytest.raises(ConfigError, match=r"2,000,010 images of 1024x1024x3 .* need 5\.7 TiB"):
        generate_captcha.generate(tmp_path / "out", tmp_path / "work", huge, 42, 1)
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


def test_generate_checks_values_before_work(tmp_path):
    with pytest.raises(ConfigError, match=r"captcha\.width must be an integer, got '160'"):
        generate_captcha.generate(tmp_path / "out", tmp_path / "work", {**VALUES, "width": "160"}, 42, 1)
    assert not (tmp_path / "work").exists()
    assert DATASETS.get("captcha").image_shape(VALUES) == (80, 160, 3)


# ---- styles ------------------------------------------------------------------------------------

ALPHABET = VALUES["alphabet"]
TEXTS = ["ABC123", "ZZ9Z0Q", "HELLO7"]


def images_digest(style: str, seed: int = 3) -> str:
    digest = hashlib.sha256()
    for i, text in enumerate(TEXTS):
        digest.update(captcha.render(text, captcha.image_key(seed, "train", i), 160, 80, style=style).tobytes())
    return digest.hexdigest()


def test_plain_style_draws_the_labels_and_images_it_drew_before_styles_existed(tmp_path):
    # Digests taken with the code before `style` existed: plain must keep reproducing old datasets.
    assert images_digest("plain") == "a7d178f40f33d469fdc696923044e6accb927bc0a80ff1d118a3bb1eeb870b94"
    labels = captcha.draw_labels(5, {"train": 50, "validation": 5, "test": 5}, ALPHABET, 6,
                                 captcha.symbol_weights(ALPHABET, "plain"))
    joined = ",".join(label for split in labels.values() for label in split)
    assert hashlib.sha256(joined.encode()).hexdigest() == \
        "9d2581b3eeaf2130df67a78d7fc63a2d518299f089c0368a0b175a6a52acbef9"
    assert labels == captcha.draw_labels(5, {"train": 50, "validation": 5, "test": 5}, ALPHABET, 6)
    out = make(tmp_path, "plain", values={**VALUES, "style": "plain"})
    meta = yaml.safe_load((out / "meta.json").read_text())
    assert (meta["style"], meta["generator"]) == ("plain", "captcha==0.7.1")
    manifest = read_manifest(out / "test" / "manifest.csv")
    again = captcha.render(manifest.label[1], captcha.image_key(42, "test", 1), 160, 80, style="plain")
    np.testing.assert_array_equal(again, np.load(out / "test" / "images.npy")[1])


def test_seed000_image_is_a_function_of_its_key_alone():
    # Pinned so that a change to the drawing is noticed: it must come with a new captcha.SEED000_VERSION.
    assert images_digest("seed000") == "bd4b0b7aa19264bfd81295e5239c92b53eaefc5e4258acd7bbc4eb305261b2ed"
    assert images_digest("seed000") == images_digest("seed000")
    key = captcha.image_key(3, "train", 0)
    first = captcha.render("ABC123", key, 160, 80, style="seed000")
    assert first.dtype == np.uint8 and first.shape == (80, 160, 3)
    other_key = captcha.render("ABC123", captcha.image_key(3, "train", 1), 160, 80, style="seed000")
    assert (first != other_key).mean() > 0.5
    assert not np.array_equal(first, captcha.render("ABC124", key, 160, 80, style="seed000"))


def test_seed000_has_impulse_noise_and_jpeg_artefacts_that_plain_has_not():
    key = captcha.image_key(42, "test", 0)
    seed000 = captcha.render("ABC123", key, 160, 80, style="seed000").astype(int)
    plain = captcha.render("ABC123", key, 160, 80, style="plain").astype(int)
    assert (seed000 != plain).mean() > 0.5

    def isolated(image: np.ndarray) -> float:
        """Share of pixels with a channel over 100 away from the median of its 8 neighbours."""
        padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
        h, w = image.shape[:2]
        around = [padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
        return float((np.abs(image - np.median(around, axis=0)) > 100).any(axis=2).mean())

    assert isolated(seed000) > 0.02 and isolated(plain) < 0.001  # about 5% and none
    # Before encoding, a pixel's channels are its grey level, 0 or 255; a pixel with two other values
    # in its channels comes from the JPEG's rounding and subsampled colour (about two thirds of them).
    inner = np.where((seed000 == 0) | (seed000 == 255), -1, seed000)
    mixed = (inner[..., 0] != inner[..., 1]) & (inner[..., 0] >= 0) & (inner[..., 1] >= 0)
    mixed |= (inner[..., 0] != inner[..., 2]) & (inner[..., 0] >= 0) & (inner[..., 2] >= 0)
    mixed |= (inner[..., 1] != inner[..., 2]) & (inner[..., 1] >= 0) & (inner[..., 2] >= 0)
    assert mixed.mean() > 0.3


@pytest.mark.parametrize("style, low, high", [("seed000", 1.8, 2.2), ("plain", 0.9, 1.1)])
def test_letters_come_up_twice_as_often_as_digits_in_seed000_only(style, low, high):
    counts = {"train": 3000, "validation": 500, "test": 500}  # 24,000 characters
    labels = captcha.draw_labels(0, counts, ALPHABET, 6, captcha.symbol_weights(ALPHABET, style))
    text = "".join(label for split in labels.values() for label in split)
    per_letter = sum(c.isalpha() for c in text) / 26
    per_digit = sum(c.isdigit() for c in text) / 10
    # The ratio's standard error is about 0.02: the bounds are five of them away.
    assert low <= per_letter / per_digit <= high
    assert labels == captcha.draw_labels(0, counts, ALPHABET, 6, captcha.symbol_weights(ALPHABET, style))
    everything = [x for s in counts for x in labels[s]]
    assert len(set(everything)) == sum(counts.values())


def test_weighted_draw_tops_up_repeats_and_checks_its_weights():
    counts = {"train": 10, "validation": 3, "test": 3}
    labels = captcha.draw_labels(0, counts, "AB1", 3, captcha.symbol_weights("AB1", "seed000"))
    everything = [x for s in counts for x in labels[s]]
    assert len(set(everything)) == 16 and all(re.fullmatch("[AB1]{3}", x) for x in everything)
    with pytest.raises(ValueError, match=r"symbol weights \[2, 0, 1\] for alphabet 'AB1'; accepted: one integer"):
        captcha.draw_labels(0, counts, "AB1", 3, [2, 0, 1])
    with pytest.raises(ValueError, match=r"CAPTCHA style 'bogus'; accepted: seed000, plain"):
        captcha.render("AB1", "k", 160, 80, style="bogus")  # type: ignore[arg-type]


def test_style_names_agree_between_the_params_and_the_drawing():
    assert typing.get_args(CaptchaParams.model_fields["style"].annotation) == captcha.STYLES
    assert DATASETS.get("captcha").section(VALUES).style == "seed000"


def test_a_stopped_run_is_kept_for_the_same_params_and_freed_with_a_word_for_others(tmp_path, monkeypatch, caplog):
    root = tmp_path / "tmp" / "generate_captcha"
    stopped = root / generate_captcha.fingerprint(VALUES, 42)
    monkeypatch.setattr(captcha, "render_chunk", CountingWorker(fail_on=3))
    with pytest.raises(RuntimeError):
        generate_captcha.generate(tmp_path / "out", stopped, VALUES, 42, 1, chunk_size=CHUNK)
    monkeypatch.undo()
    size = sum(p.stat().st_blocks * 512 for p in stopped.rglob("*") if p.is_file())
    assert size > 0 and generate_captcha.kept_work(stopped).endswith(f"({size_text(size)})")

    assert generate_captcha.remove_other_work_dirs(root, keep=stopped.name) == 0  # the same params: reused
    assert stopped.is_dir()
    with caplog.at_level("INFO", logger="transferbench.data.generation"):
        freed = generate_captcha.remove_other_work_dirs(root, keep=generate_captcha.fingerprint(VALUES, 7))
    assert freed == size and not stopped.exists()
    assert f"{stopped.name} (freed {size_text(size)})" in caplog.text, caplog.text


def test_rendering_into_a_log_says_how_far_it_got_with_rate_and_time_left(tmp_path, caplog, monkeypatch):
    from transferbench.core import progress

    monkeypatch.setattr(progress, "in_terminal", lambda: False)  # piped, as under DVC or CI
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")  # a line at every chunk, not every 10 s
    caplog.set_level(logging.INFO, logger="transferbench.core.progress")
    make(tmp_path, "piped")
    shown = [r.getMessage() for r in caplog.records if r.name == "transferbench.core.progress"]
    step = re.compile(r"^rendering (\d+)/30 img \(\d+%\), [\d.,]+ img/s, \d\d:\d\d left$")
    assert [int(step.match(line)[1]) for line in shown[:-1]] == [4, 8, 12, 16, 20, 24, 25, 29, 30], shown
    assert re.fullmatch(r"rendering 30/30 img \(100%\), [\d.,]+ img/s, done in \d\d:\d\d", shown[-1]), shown
