"""Images per second of photo preparation: plain Pillow in one process vs our decoder vs the whole stage.

Run from the repository root: ``.venv/bin/python benchmarks/prepare.py --count 300``.
Makes ``--count`` photo-like 640x480 JPEGs (quality 90) and prepares them to 100x100 and 224x224:

    baseline    Image.open(path).convert("RGB").resize(size) per file, one process (Keras' load_img, less
                its nearest-neighbour default: Pillow's own default filter)
    ours, 1     transferbench.data.images.prepare_image per file (draft-mode decode, checks, bilinear), one process
    stage, N    transferbench.data.preparation.prepare on N workers: planning, pool start-up, hashes, copies, manifests

Methods take turns for ``--repeat`` rounds and each keeps its best, so load from other processes
skews them alike and least. Results go to stdout; the stage's own lines go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import sys
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks.common` when run as a script

import common  # noqa: E402  (benchmarks/common.py)

from transferbench.data import images  # noqa: E402
from transferbench.data import preparation as prepare  # noqa: E402
from transferbench.data.raw import write_raw_manifest  # noqa: E402

PETS = {"workers": 1, "tolerance": 0.02,
        "source": {"csv_base": "https://example.invalid/", "s3_endpoint": "", "bucket": "b", "limit": 0,
                   "download_workers": 1, "retries": 1}}


def machine() -> str:
    return common.machine(prepare.decoder(), f"numpy {version('numpy')}")


def photo_jpeg(rng: np.random.Generator, width: int = 640, height: int = 480) -> bytes:
    """Smooth gradients, blotches, shapes with edges and sensor-like noise; JPEG quality 90."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([rng.uniform(40, 200) + rng.uniform(-60, 60) * xx / width + rng.uniform(-60, 60) * yy / height
                     for _ in range(3)], axis=-1)
    coarse = rng.integers(0, 256, (height // 40 + 1, width // 40 + 1, 3), dtype=np.uint8)
    blotches = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    pixels = 0.6 * base + 0.4 * blotches + rng.normal(0, 6, (height, width, 3))
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = (x0, y0, x0 + int(rng.integers(10, 200)), y0 + int(rng.integers(10, 200)))
        draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    out = io.BytesIO()
    img.filter(ImageFilter.GaussianBlur(0.7)).save(out, "JPEG", quality=90)
    return out.getvalue()


def write_raw(raw_dir: Path, count: int) -> list[Path]:
    """``count`` JPEGs and their raw manifest (pets layout: 80 % train, 10 % validation, 10 % test)."""
    rng = np.random.default_rng(0)
    rows, files = [], []
    for i in range(count):
        split = "train" if i % 10 < 8 else ("validation" if i % 10 == 8 else "test")
        path = raw_dir / split / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = photo_jpeg(rng)
        path.write_bytes(data)
        files.append(path)
        rows.append({"key": f"{split}/{i:05d}.jpg", "source_split": split, "label": ("cat", "dog", "bird")[i % 3],
                     "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "status": "ok", "reason": ""})
    write_raw_manifest(raw_dir, rows)
    return files


def baseline(files: list[Path], side: int) -> None:
    for path in files:
        np.asarray(Image.open(path).convert("RGB").resize((side, side)))


def ours(files: list[Path], side: int) -> None:
    for path in files:
        images.prepare_image(path.read_bytes(), side, side)


def stage(raw_dir: Path, side: int, workers: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp, contextlib.redirect_stdout(sys.stderr):
        prepare.prepare("pets", {**PETS, "height": side, "width": side}, 0, raw_dir, Path(tmp) / "out",
                        Path(tmp) / "work", loader=None, workers=workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="JPEGs per method (default 300)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 224], help="square sides (default 100 224)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="stage worker counts (default 1 2)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each method keeps its best (default 3)")
    args = parser.parse_args()
    if args.count < 10:
        parser.error(f"--count must be at least 10 (every split gets images), got {args.count}")
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")

    with tempfile.TemporaryDirectory(prefix="bench-raw-") as tmp:
        raw_dir = Path(tmp) / "pets"
        files = write_raw(raw_dir, args.count)
        mean_kb = sum(p.stat().st_size for p in files) / len(files) / 1024
        methods: dict[str, Callable[[int], None]] = {
            "baseline: open().convert('RGB').resize(), 1 process": lambda side: baseline(files, side),
            "ours: prepare_image (draft), 1 process": lambda side: ours(files, side),
            **{f"stage: prepare(), workers={w}": (lambda side, w=w: stage(raw_dir, side, w)) for w in args.workers},
        }
        load_before = os.getloadavg()[0]
        results = {}
        for side in args.sizes:
            timings = {name: (lambda run=run, side=side: common.timed(lambda: run(side)))
                       for name, run in methods.items()}
            results[side] = common.best_of_rounds(timings, args.repeat)

    print(machine())
    print(f"{args.count} JPEGs, 640x480, quality 90, {mean_kb:.0f} KB on average; best of {args.repeat} interleaved "
          f"rounds; 1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print("| size | method | best s | images/s | vs baseline | CPU ms/image | wall s of every round |")
    print("|---|---|---:|---:|---:|---:|---|")
    for side, (rounds, best) in results.items():
        base_rate = args.count / best[next(iter(methods))][0]
        for name, (seconds, cpu) in best.items():
            rate = args.count / seconds
            print(f"| {side}x{side} | {name} | {seconds:.2f} | {rate:,.0f} | {rate / base_rate:.2f}x | "
                  f"{1000 * cpu / args.count:.2f} | {common.spread(rounds, name)} |")


if __name__ == "__main__":
    main()
