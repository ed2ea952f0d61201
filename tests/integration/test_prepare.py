"""Photo preparation on a small raw dataset the tests make: every kind of bad file, duplicates, leaks,
conversions, the prepared layout validation reads, identical bytes, resuming, and bad input."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from tests.stage_run import copy_code, run_stage
from transferbench.core import paths
from transferbench.core.errors import ConfigError
from transferbench.data import images
from transferbench.data import preparation as prepare
from transferbench.data.datasets import DATASETS, read_manifest
from transferbench.data.raw import write_raw_manifest

H, W = 16, 20  # not square, so squashing and EXIF turns are visible
MAX_PIXELS = 20_000  # "huge" for these tests: the 200x150 image exceeds it, every other image is far below
CHUNK = 4
PETS = {"height": H, "width": W, "workers": 1, "tolerance": 0.5,
        "source": {"csv_base": "https://example.invalid/", "s3_endpoint": "", "bucket": "b", "limit": 0,
                   "download_workers": 1, "retries": 1}}


# ---- images the tests make ------------------------------------------------------------------------

def photo(seed: int, w: int = 48, h: int = 36) -> np.ndarray:
    """Gradients plus noise: never blank, and different for every seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([rng.uniform(30, 220) + rng.uniform(-40, 40) * xx / w + rng.uniform(-40, 40) * yy / h
                     for _ in range(3)], axis=-1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kwargs)
    return out.getvalue()


def jpeg(seed: int, **kwargs) -> bytes:
    return encode(Image.fromarray(photo(seed)), "JPEG", quality=90, **kwargs)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height RGB pixels: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def turned_jpeg() -> bytes:
    """40x20 as stored, left half red, right half blue, EXIF orientation 6: upright, red is on top."""
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (230, 20, 20)
    pixels[:, 20:] = (20, 20, 230)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes())


def palette_with_transparency() -> bytes:
    """Left half palette index 0, transparent; right half opaque colours."""
    indices = np.tile(np.arange(40, dtype=np.uint8) * 6, (30, 1))
    indices[:, :20] = 0
    img = Image.fromarray(indices, mode="P")
    img.putpalette([v for i in range(256) for v in (i, 255 - i, (i * 7) % 256)])
    return encode(img, "PNG", transparency=0)


def rgba_half_transparent() -> bytes:
    pixels = np.dstack([photo(50, 40, 30), np.full((30, 40), 255, dtype=np.uint8)])
    pixels[:, :20] = (0, 0, 0, 0)  # black, but invisible: must come out white
    return encode(Image.fromarray(pixels, mode="RGBA"), "PNG")


def grey16() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 40).astype(np.uint16), (30, 1))
    return encode(Image.fromarray(ramp), "PNG")


LEAK_TRAIN_TEST = jpeg(900)
LEAK_TRAIN_VALIDATION = jpeg(901)
DUPLICATE = jpeg(902)
WHOLE = jpeg(903)
CONFLICT_SPLITS = jpeg(904)  # under two labels in two splits
CONFLICT_SPLIT = jpeg(905)   # under two labels in one split, and a third copy under one of them
PNG_NAMED_JPG = encode(Image.fromarray(photo(12)), "PNG")
# key -> (source_split, label, bytes, expected drop kind or '' for kept, expected converted)
FILES = {
    **{f"train/good{i}.jpg": ("train", ("cat", "dog", "bird")[i % 3], jpeg(i), "", "") for i in range(6)},
    "train/dup_a.jpg": ("train", "cat", DUPLICATE, "", ""),
    "train/dup_b.jpg": ("train", "cat", DUPLICATE, "duplicate", ""),
    "train/leak_test.jpg": ("train", "dog", LEAK_TRAIN_TEST, "leak", ""),
    "train/leak_validation.jpg": ("train", "dog", LEAK_TRAIN_VALIDATION, "leak", ""),
    "train/truncated.jpg": ("train", "cat", WHOLE[: len(WHOLE) // 2], "truncated", ""),
    "train/empty.jpg": ("train", "cat", b"", "empty", ""),
    "train/missing.jpg": ("train", "cat", None, "unreadable", ""),  # listed as fetched, but not on disk
    "train/text.jpg": ("train", "dog", b"<html>404 Not Found</html>\n", "not an image", ""),
    "train/bomb.png": ("train", "bird", png_declaring(60_000, 60_000), "too large", ""),
    "train/big.png": ("train", "bird", encode(Image.fromarray(photo(7, 200, 150)), "PNG"), "too large", ""),
    "train/blank.png": ("train", "bird", encode(Image.new("RGB", (30, 20), (128, 128, 128)), "PNG"), "blank", ""),
    "train/cmyk.jpg": ("train", "cat", encode(Image.fromarray(photo(8)).convert("CMYK"), "JPEG", quality=95),
                       "", "CMYK->RGB"),
    "train/grey.png": ("train", "dog", encode(Image.fromarray(photo(9)).convert("L"), "PNG"), "", "L->RGB"),
    "train/grey_alpha.png": ("train", "dog", encode(Image.fromarray(photo(10)).convert("LA"), "PNG"), "", "LA->RGB"),
    "train/grey16.png": ("train", "bird", grey16(), "", "I;16->RGB"),
    "train/palette.png": ("train", "cat", encode(Image.fromarray(photo(11)).convert("P"), "PNG"), "", "P->RGB"),
    "train/palette_transparent.png": ("train", "cat", palette_with_transparency(), "", "P->RGB"),
    "train/rgba.png": ("train", "dog", rgba_half_transparent(), "", "RGBA->RGB"),
    "train/turned.jpg": ("train", "bird", turned_jpeg(), "", "EXIF orientation 6"),
    "train/conflict_cat.jpg": ("train", "cat", CONFLICT_SPLITS, "label conflict", ""),
    "train/png_named.jpg": ("train", "dog", PNG_NAMED_JPG, "", ""),
    "validation/conflict_a.jpg": ("validation", "cat", CONFLICT_SPLIT, "label conflict", ""),
    "validation/conflict_b.jpg": ("validation", "bird", CONFLICT_SPLIT, "label conflict", ""),
    "validation/conflict_c.jpg": ("validation", "cat", CONFLICT_SPLIT, "label conflict", ""),
    **{f"validation/good{i}.jpg": ("validation", ("cat", "dog", "bird")[i % 3], jpeg(100 + i), "", "")
       for i in range(3)},
    "validation/leak_copy.jpg": ("validation", "dog", LEAK_TRAIN_VALIDATION, "", ""),
    **{f"test/good{i}.jpg": ("test", ("cat", "dog", "bird")[i % 3], jpeg(200 + i), "", "") for i in range(4)},
    "test/leak_copy.jpg": ("test", "dog", LEAK_TRAIN_TEST, "", ""),
    "test/whole.jpg": ("test", "cat", WHOLE, "", ""),
    "test/conflict_dog.jpg": ("test", "dog", CONFLICT_SPLITS, "label conflict", ""),
}
NOT_OK = [  # rows of the raw manifest that preparation must not touch
    {"key": "train/both.jpg", "source_split": "train", "label": "cat", "status": "excluded",
     "reason": "labelled cat and dog"},
    {"key": "test/gone.jpg", "source_split": "test", "label": "dog", "status": "failed", "reason": "HTTP 404"},
]


def write_raw(raw_dir: Path) -> Path:
    rows = []
    for key, (split, label, data, _, _) in FILES.items():
        (raw_dir / key).parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            (raw_dir / key).write_bytes(data)
        rows.append({"key": key, "source_split": split, "label": label, "bytes": len(data or b""),
                     "sha256": hashlib.sha256(data or b"").hexdigest(), "status": "ok", "reason": ""})
    write_raw_manifest(raw_dir, rows + NOT_OK)
    return raw_dir


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> Path:
    return write_raw(tmp_path_factory.mktemp("raw") / "pets")


def run(raw_dir: Path, root: Path, *, workers: int = 1, chunk_size: int = CHUNK, on_progress=None,
        values: dict = PETS, name: str = "pets", loader: str | None = None) -> tuple[Path, dict]:
    out = root / "prepared" / name
    report = prepare.prepare(name, values, 42, raw_dir, out, root / "work", loader=loader, workers=workers,
                             chunk_size=chunk_size, max_pixels=MAX_PIXELS, on_progress=on_progress)
    return out, report


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(raw_dir, tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted run: one worker, chunks of 4."""
    return run(raw_dir, tmp_path_factory.mktemp("reference"))


def split_of(out: Path, split: str) -> tuple[np.ndarray, pd.DataFrame]:
    return np.load(out / split / "images.npy"), read_manifest(out / split / "manifest.csv")


# ---- what comes out --------------------------------------------------------------------------------

def test_every_item_is_kept_or_quarantined_with_its_reason(reference):
    out, _ = reference
    quarantine = pd.read_csv(out / "quarantine.csv", dtype=str, keep_default_na=False)
    assert list(quarantine.columns) == prepare.QUARANTINE_COLUMNS
    dropped = {k: r.split(":")[0] for k, r in zip(quarantine["key"], quarantine["reason"], strict=True)}
    assert dropped == {key: kind for key, (*_, kind, _) in FILES.items() if kind}
    kept = {key for split in paths.SPLITS for key in split_of(out, split)[1]["key"]}
    assert kept == {key for key, (*_, kind, _) in FILES.items() if not kind}
    reasons = dict(zip(quarantine["key"], quarantine["reason"], strict=True))
    assert reasons["train/dup_b.jpg"] == "duplicate: same pixels as train/dup_a.jpg"
    assert reasons["train/leak_test.jpg"] == "leak: also in test as test/leak_copy.jpg"
    assert reasons["train/leak_validation.jpg"] == "leak: also in validation as validation/leak_copy.jpg"
    assert "60000x60000" in reasons["train/bomb.png"] or "exceeds limit" in reasons["train/bomb.png"]
    assert "200x150 = 30,000 pixels; the limit is 20,000" in reasons["train/big.png"]
    assert dict(zip(quarantine["key"], quarantine["split"], strict=True))["train/leak_test.jpg"] == "train"
    # The same image under two labels: every copy goes, on both sides, and none counts as a duplicate or leak.
    assert reasons["train/conflict_cat.jpg"] == "label conflict: cat here, dog as test/conflict_dog.jpg"
    assert reasons["test/conflict_dog.jpg"] == "label conflict: dog here, cat as train/conflict_cat.jpg"
    assert reasons["validation/conflict_c.jpg"] == "label conflict: cat here, bird as validation/conflict_b.jpg"


def test_manifest_columns_rows_and_conversions(reference):
    out, _ = reference
    for split in paths.SPLITS:
        pixels, manifest = split_of(out, split)
        assert list(manifest.columns) == prepare.MANIFEST_COLUMNS
        assert pixels.dtype == np.uint8 and pixels.shape == (len(manifest), H, W, 3)
        assert list(manifest["key"]) == sorted(manifest["key"])
        assert list(manifest["sha256"]) == [hashlib.sha256(p.tobytes()).hexdigest() for p in pixels]
        for key, source_sha, label in zip(manifest["key"], manifest["source_sha256"], manifest["label"], strict=True):
            assert source_sha == hashlib.sha256(FILES[key][2]).hexdigest() and label == FILES[key][1]
        converted = dict(zip(manifest["key"], manifest["converted"], strict=True))
        assert converted == {k: FILES[k][4] for k in manifest["key"]}
        formats = dict(zip(manifest["key"], manifest["format"], strict=True))
        assert formats == {k: Image.open(io.BytesIO(FILES[k][2])).format for k in manifest["key"]}
        notes = dict(zip(manifest["key"], manifest["format_note"], strict=True))
        assert notes == {k: "format mismatch: PNG named .jpg" if k == "train/png_named.jpg" else ""
                         for k in manifest["key"]}
    train = split_of(out, "train")[1].set_index("key")
    assert (train.at["train/good0.jpg", "orig_width"], train.at["train/good0.jpg", "orig_height"]) == (48, 36)
    assert (train.at["train/turned.jpg", "orig_width"], train.at["train/turned.jpg", "orig_height"]) == (40, 20)


def pixels_of(out: Path, key: str) -> np.ndarray:
    pixels, manifest = split_of(out, FILES[key][0])
    return pixels[list(manifest["key"]).index(key)].astype(int)


def test_converted_images_look_right(reference):
    out, _ = reference
    turned = pixels_of(out, "train/turned.jpg")  # upright: red above blue (stored: red left of blue)
    assert turned[0, :, 0].mean() > 180 and turned[0, :, 2].mean() < 60
    assert turned[-1, :, 2].mean() > 180 and turned[-1, :, 0].mean() < 60
    for key in ("train/rgba.png", "train/palette_transparent.png"):  # transparent left half: white
        assert pixels_of(out, key)[:, :3].min() >= 250, key
        assert pixels_of(out, key)[:, -3:].min() < 250, key
    for key in ("train/grey.png", "train/grey16.png", "train/grey_alpha.png"):
        grey = pixels_of(out, key)
        assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all(), key
    ramp = pixels_of(out, "train/grey16.png")[..., 0]  # scaled from 16 bits, not clipped to white
    assert ramp[:, 0].max() < 10 and ramp[:, -1].min() > 245 and 100 < ramp.mean() < 155
    reference_rgb = np.asarray(Image.fromarray(photo(8)).resize((W, H), images.RESAMPLE), dtype=int)
    assert np.abs(pixels_of(out, "train/cmyk.jpg") - reference_rgb).mean() < 12


def test_output_is_what_validation_reads(reference):
    from transferbench.data.validation import read_frames

    out, _ = reference
    frames = read_frames(out, "prepare@pets")
    assert frames["manifest"]["sha256"].is_unique  # across all splits
    splits = frames["splits"]
    assert (splits["rows"] == splits["images"]).all() and (splits["rows"] > 0).all()
    assert set(splits["dtype"]) == {"uint8"} and set(splits["ndim"]) == {4}
    assert set(splits["height"]) == {H} and set(splits["width"]) == {W} and set(splits["channels"]) == {3}
    stats = frames["images"]
    assert (stats["sha256"] == stats["manifest_sha256"]).all()
    assert (stats["std"] > images.MIN_PIXEL_STD).all()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["splits"] == {s: int(n) for s, n in zip(splits["split"], splits["images"], strict=True)}
    assert meta["expected"] == {s: sum(f[0] == s for f in FILES.values()) for s in paths.SPLITS}
    assert meta["image_shape"] == [H, W, 3] and meta["classes"] == ["cat", "dog", "bird"] and meta["seed"] == 42


def test_validation_stage_passes_the_output(reference, tmp_path):
    from transferbench.data.validation import failure_lines, validate

    summary = validate("pets", reference[0], PETS, tmp_path / "validation")
    assert summary.success, "\n".join(failure_lines(summary))


def test_report_counts_drops_and_the_seeds_numbers(reference):
    out, report = reference
    assert report["splits"]["train"]["expected"] == sum(f[0] == "train" for f in FILES.values())
    assert report["splits"]["train"]["dropped"] == {"blank": 1, "duplicate": 1, "empty": 1, "label conflict": 1,
                                                    "leak": 2, "not an image": 1, "too large": 2, "truncated": 1,
                                                    "unreadable": 1}
    assert report["splits"]["validation"]["dropped"] == {"label conflict": 3}
    assert report["splits"]["test"]["dropped"] == {"label conflict": 1}
    assert report["duplicates"] == 1 and report["leaks"] == 2 and report["label_conflicts"] == 5
    assert {e["key"] for e in report["label_conflict_examples"]} == {
        k for k, f in FILES.items() if f[3] == "label conflict"}
    assert report["format_mismatches"] == 1
    assert report["format_mismatch_examples"] == [{"split": "train", "key": "train/png_named.jpg",
                                                   "note": "format mismatch: PNG named .jpg"}]
    kept = [Image.open(io.BytesIO(f[2])).format for f in FILES.values() if not f[3]]
    assert report["formats"] == {"JPEG": kept.count("JPEG"), "PNG": kept.count("PNG")}
    kept_test = split_of(out, "test")[1]
    assert report["splits"]["test"]["classes"] == {c: int((kept_test["label"] == c).sum())
                                                   for c in ("cat", "dog", "bird")}
    assert report["published"]["test"]["classes"]["dog"] == {"seed": 4491,
                                                             "ours": report["splits"]["test"]["classes"]["dog"]}
    assert report["published"]["train"]["excluded_at_fetch"] == 1
    assert report["published"]["test"]["failed_at_fetch"] == 1
    assert report["fetch"]["excluded"] == {"train": {"labelled cat and dog": 1}}
    assert report["fetch"]["status"] == {"excluded": 1, "failed": 1, "ok": len(FILES)}
    assert report["converted"]["P->RGB"] == 2 and report["converted"]["EXIF orientation 6"] == 1
    assert report["timing"]["decoded"] == len(FILES) and report["timing"]["images_per_second"] > 0
    lines = "\n".join(prepare.summary_lines(report, out))
    assert "train" in lines and "leak 2" in lines and "reference study's test: cat 907" in lines
    assert "label conflicts (the same image under two labels, all copies dropped): 5" in lines
    assert "named as another format (format_note in the manifests): 1, e.g. train/png_named.jpg" in lines


# ---- identical bytes, resuming ---------------------------------------------------------------------

def test_same_inputs_give_identical_bytes_whatever_the_workers_or_chunks(raw_dir, reference, tmp_path):
    expected = digests(reference[0])
    assert sorted(expected) == ["meta.json", "quarantine.csv", *(f"{s}/{f}" for s in sorted(paths.SPLITS)
                                                                 for f in ("images.npy", "manifest.csv"))]
    assert digests(run(raw_dir, tmp_path / "again")[0]) == expected
    assert digests(run(raw_dir, tmp_path / "two", workers=2)[0]) == expected
    assert digests(run(raw_dir, tmp_path / "chunks", chunk_size=7)[0]) == expected
    assert not (tmp_path / "again" / "work").exists() or not any((tmp_path / "again" / "work").iterdir())


class Hook:
    """Counts progress steps; raises on the ``fail_on``-th step named ``step``."""

    def __init__(self, step: str | None = None, fail_on: int = 0):
        self.calls: dict[str, int] = {"decoded": 0, "copied": 0}
        self.step, self.fail_on = step, fail_on

    def __call__(self, step: str, chunk) -> None:
        self.calls[step] += 1
        if step == self.step and self.calls[step] == self.fail_on:
            raise RuntimeError("simulated kill")


def n_chunks() -> int:
    return sum(-(-sum(f[0] == s for f in FILES.values()) // CHUNK) for s in paths.SPLITS)


@pytest.mark.parametrize("step", ["decoded", "copied"])
def test_killed_run_leaves_old_output_alone_and_resumes(raw_dir, reference, tmp_path, step):
    out = tmp_path / "prepared" / "pets"
    out.mkdir(parents=True)
    (out / "old.txt").write_text("previous output")
    with pytest.raises(RuntimeError, match="simulated kill"):
        run(raw_dir, tmp_path, on_progress=Hook(step, fail_on=3))
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    (work,) = (tmp_path / "work").iterdir()
    assert len(list((work / "done").glob("*.json"))) == (3 if step == "decoded" else n_chunks())

    resumed = Hook()
    run(raw_dir, tmp_path, on_progress=resumed)
    if step == "decoded":  # only the chunks not yet decoded are decoded again
        assert resumed.calls == {"decoded": n_chunks() - 3, "copied": n_chunks()}
    else:  # nothing decoded again; the copies not yet made are made
        assert resumed.calls == {"decoded": 0, "copied": n_chunks() - 3}
    assert digests(out) == digests(reference[0])
    assert not work.exists()


def test_other_inputs_do_not_reuse_partial_work(raw_dir, tmp_path):
    with pytest.raises(RuntimeError):
        run(raw_dir, tmp_path, on_progress=Hook("decoded", fail_on=2))
    (stale,) = (tmp_path / "work").iterdir()
    resumed = Hook()
    out, _ = run(raw_dir, tmp_path, values={**PETS, "width": W + 2}, on_progress=resumed)
    assert resumed.calls["decoded"] == n_chunks()  # nothing reused from the other size
    assert not stale.exists()  # and the other size's partial work is gone
    assert np.load(out / "test" / "images.npy").shape[1:] == (H, W + 2, 3)


# ---- sources that ship pixels (CIFAR-10) -------------------------------------------------------------

FAKE_SOURCE = '''
from pathlib import Path
import numpy as np

def load(raw_dir, key):
    return np.load(Path(raw_dir) / "pixels.npy")[int(key.split(":")[1])]
'''


def test_pixel_sources_are_loaded_and_enlarged(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    raw = tmp_path / "raw" / "cifar10"
    raw.mkdir(parents=True)
    pixels = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    np.save(raw / "pixels.npy", pixels)
    rows = [{"key": f"batch:{i:04d}", "source_split": "train" if i < 8 else "test", "label": ("cat", "dog")[i % 2],
             "bytes": pixels[i].nbytes, "sha256": hashlib.sha256(pixels[i].tobytes()).hexdigest(),
             "status": "ok", "reason": ""} for i in range(12)]
    write_raw_manifest(raw, rows)
    (tmp_path / "fake_cifar_source.py").write_text(FAKE_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawn workers start with the parent's sys.path
    values = {"validation": 2, "height": 40, "width": 40, "workers": 2, "tolerance": 0.0,
              "source": {"urls": ["https://example.invalid/c.tgz"], "sha256": None}}
    out, report = run(raw, tmp_path, values=values, name="cifar10", loader="fake_cifar_source", workers=2)
    assert {s: report["splits"][s]["kept"] for s in paths.SPLITS} == {"train": 6, "validation": 2, "test": 4}
    test_pixels, manifest = split_of(out, "test")
    assert test_pixels.shape == (4, 40, 40, 3) and set(manifest["converted"]) == {""}
    assert set(manifest["format"]) == {images.PIXELS} and set(manifest["format_note"]) == {""}
    assert (manifest["orig_width"] == 32).all()
    expected = np.asarray(Image.fromarray(pixels[8]).resize((40, 40), images.RESAMPLE))
    np.testing.assert_array_equal(test_pixels[0], expected)
    assert report["published"]["test"]["classes"] == {"*": {"seed": 10000, "ours": 4}}


def test_source_loader_uses_load_only_where_a_source_defines_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "transferbench.data.sources.cifar10",
                        types.SimpleNamespace(load=lambda raw_dir, key: b""))
    monkeypatch.setitem(sys.modules, "transferbench.data.sources.cats_and_dogs_filtered", types.SimpleNamespace())
    assert prepare.source_loader(DATASETS.get("cifar10")) == "transferbench.data.sources.cifar10"
    assert prepare.source_loader(DATASETS.get("cats_and_dogs_filtered")) is None


# ---- one image at a time ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode, values, expected", [
    ("I", [[0, 100], [200, 255]], "I->RGB"), ("F", [[0.0, 99.6], [200.0, 255.0]], "F->RGB")])
def test_wide_grey_is_used_only_within_0_to_255(mode, values, expected):
    img = Image.fromarray(np.kron(np.array(values, dtype=np.int32 if mode == "I" else np.float32),
                                  np.ones((8, 8), dtype=np.int32 if mode == "I" else np.float32)), mode=mode)
    prepared = images.prepare_image(encode(img, "TIFF"), 4, 4)
    assert prepared.converted == expected and prepared.pixels[0, 0, 0] == 0 and prepared.pixels[-1, -1, 0] == 255
    too_wide = Image.fromarray(np.full((8, 8), 1000, dtype=np.int32) + np.eye(8, dtype=np.int32), mode="I")
    with pytest.raises(images.Rejected, match=r"unsupported: mode I with values in \[1000, 1001\]"):
        images.prepare_image(encode(too_wide, "TIFF"), 4, 4)


def test_truncated_files_are_rejected_even_where_pillow_was_told_to_pad_them(monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some training scripts set it
    with pytest.raises(images.Rejected, match=r"^truncated: OSError: image file is truncated"):
        images.prepare_image(WHOLE[: len(WHOLE) * 2 // 3], H, W)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # and the setting is left as it was


def test_pixel_arrays_of_the_wrong_kind_are_rejected():
    with pytest.raises(images.Rejected, match=r"unsupported: array of float32 \(4, 4, 3\)"):
        images.prepare_image(np.zeros((4, 4, 3), dtype=np.float32), 4, 4)


def test_big_jpegs_are_decoded_at_reduced_scale(monkeypatch):
    loaded: list[tuple[int, int]] = []
    original = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        loaded.append(self.size)
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    big = encode(Image.fromarray(photo(1, 640, 480)), "JPEG", quality=90)
    assert images.prepare_image(big, 50, 50).pixels.shape == (50, 50, 3)
    assert loaded == [(80, 60)]  # 1/8 scale: libjpeg never decoded the full 640x480


# ---- bad input fails before any work ------------------------------------------------------------------

@pytest.mark.parametrize("name, values, error, message", [
    ("nope", PETS, ConfigError, r"unknown dataset 'nope'; datasets to prepare: cats_and_dogs_filtered, cifar10, "
                                r"dogs_vs_cats, pets"),
    ("captcha", PETS, ConfigError, r"captcha is generated, not fetched"),
    ("pets", {**PETS, "height": 0}, ConfigError, r"pets.height must be >= 1, got 0"),
    ("pets", {**PETS, "colour": "rgb"}, ConfigError, r"unknown key pets.colour"),
])
def test_bad_input_fails_before_work(raw_dir, tmp_path, name, values, error, message):
    with pytest.raises(error, match=message):
        run(raw_dir, tmp_path, values=values, name=name)
    assert not (tmp_path / "work").exists() and not (tmp_path / "prepared").exists()


def test_images_that_would_not_fit_on_the_disk_are_refused_before_work(raw_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"pets: \d+ images of 20x16x3 \(train \d+, validation \d+, test \d+\) "
                                          r"need [\d.]+ KiB under .*work.*, but that disk has 100 B free"):
        prepare.prepare("pets", PETS, 42, raw_dir, tmp_path / "prepared" / "pets", tmp_path / "work", loader=None,
                        workers=1, free_bytes=100)
    assert not (tmp_path / "work").exists() and not (tmp_path / "prepared").exists()


def test_missing_raw_manifest_says_to_fetch_first(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run `dvc repro fetch@pets` first"):
        run(tmp_path / "raw" / "pets", tmp_path)
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("status, label, message", [
    ("ok", "horse", r"label 'horse'; classes: cat, dog, bird"),
    ("failed", "cat", r"no item with status ok: rerun `dvc repro fetch@pets`"),
])
def test_unusable_raw_manifests_fail_before_work(tmp_path, status, label, message):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_raw_manifest(raw, [{"key": "a.jpg", "source_split": "train", "label": label, "bytes": 1,
                              "sha256": "0" * 64, "status": status, "reason": ""}])
    with pytest.raises(ValueError, match=message):
        run(raw, tmp_path)
    assert not (tmp_path / "work").exists()


# ---- the command -----------------------------------------------------------------------------------

def test_stage_writes_the_prepared_data_and_the_report(raw_dir, tmp_path):
    def small(params: dict) -> None:
        params["pets"].update(height=H, width=W, workers=1)
        # Images this small are under Xception's minimum: the pets experiment would (rightly) refuse them.
        params["experiments"] = {k: v for k, v in params["experiments"].items() if v["dataset"] != "pets"}

    root = copy_code(tmp_path / "repo", small)
    (root / "data" / "raw").mkdir(parents=True)
    (root / "data" / "raw" / "pets").symlink_to(raw_dir)
    result = run_stage(root, "prepare", "pets")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "prepare pets: wrote data/prepared/pets" in result.stderr

    # What the package function makes of the same input with the stage's defaults (the file's MAX_PIXELS).
    values = yaml.safe_load((root / "params.yaml").read_text())["pets"]
    expected = prepare.prepare("pets", values, 42, raw_dir, tmp_path / "expected", tmp_path / "work", loader=None,
                               workers=1)
    written = json.loads((root / "reports" / "pets" / "prepare.json").read_text())
    assert {k: v for k, v in written.items() if k != "timing"} == {k: v for k, v in expected.items() if k != "timing"}
    assert digests(root / "data" / "prepared" / "pets") == digests(tmp_path / "expected")
    assert not any((root / "tmp" / "prepare").iterdir())


# ---- exact split sizes -------------------------------------------------------------------------------

def test_split_sizes_come_out_exact_and_validation_expects_them(tmp_path):
    # 21 cats and 21 dogs cut into validation 21 and test 21: the rounding once gave cats the extra
    # half twice, so test got 20 images, and validation, expecting what was produced, passed.
    from transferbench.data.validation import failure_lines, validate

    raw = tmp_path / "raw"
    rows = []
    for i, (split, label) in enumerate([("train", "cat"), ("train", "dog")] * 2 + [("validation", "cat")] * 21
                                       + [("validation", "dog")] * 21):
        key = f"{split}/{label}s/{i:03d}.jpg"
        (raw / key).parent.mkdir(parents=True, exist_ok=True)
        data = jpeg(300 + i)
        (raw / key).write_bytes(data)
        rows.append({"key": key, "source_split": split, "label": label, "bytes": len(data),
                     "sha256": hashlib.sha256(data).hexdigest(), "status": "ok", "reason": ""})
    write_raw_manifest(raw, rows)
    values = {"validation": 21, "test": 21, "height": H, "width": W, "workers": 1, "tolerance": 0.0,
              "source": {"urls": ["https://example.invalid/a.zip"], "sha256": None}}
    out, report = run(raw, tmp_path, values=values, name="cats_and_dogs_filtered")
    assert {s: report["splits"][s]["kept"] for s in paths.SPLITS} == {"train": 4, "validation": 21, "test": 21}
    summary = validate("cats_and_dogs_filtered", out, values, tmp_path / "validation")
    assert summary.success, "\n".join(failure_lines(summary))
    # Asked for one more than there is: refused before any work, naming what is possible.
    with pytest.raises(ConfigError, match=r"splits ask for 43 images \(validation 22, test 21\) but the source has "
                                          r"42 \(cat 21, dog 21\); accepted: at most 42 in all"):
        run(raw, tmp_path / "more", values={**values, "validation": 22}, name="cats_and_dogs_filtered")
    assert not (tmp_path / "more" / "work").exists()
