"""Small prepared datasets in the layout of transferbench.data.datasets, made on the fly for tests and for CI.

    python -m tests.fixture_data OUT_DIR     # writes OUT_DIR/<dataset>/ for every registered dataset

CI (.ci/run) validates these with the real great-expectations suites (`transferbench.data.validation --prepared`),
so a change that breaks a suite's schema fails there even without network or real data.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import yaml

from transferbench.core import paths
from transferbench.core.files import write_json, write_text
from transferbench.data.datasets import DATASETS
from transferbench.study.params import Params, load_params

PER_CLASS = {"train": 4, "validation": 2, "test": 2}


def _pixels(rng: np.random.Generator, n: int, shape: tuple[int, int, int]) -> np.ndarray:
    # Smooth gradients plus noise: distinct, not blank, mid-range brightness, like photos.
    base = rng.integers(40, 200, (n, 1, 1, 3))
    noise = rng.integers(-30, 30, (n, *shape))
    ramp = np.linspace(-20, 20, shape[1])[None, None, :, None]
    return np.clip(base + noise + ramp, 0, 255).astype(np.uint8)


def write_photo_split(folder: Path, labels: list[str], shape: tuple[int, int, int], rng: np.random.Generator,
                      key_prefix: str) -> None:
    """images.npy + manifest.csv with the photo columns preparation writes."""
    folder.mkdir(parents=True, exist_ok=True)
    images = _pixels(rng, len(labels), shape)
    np.save(folder / "images.npy", images)
    lines = ["label,sha256,key,source_sha256,orig_width,orig_height,converted,format,format_note"]
    for i, label in enumerate(labels):
        digest = hashlib.sha256(images[i].tobytes()).hexdigest()
        lines.append(f"{label},{digest},{key_prefix}/{i:05d}.jpg,{hashlib.sha256(digest.encode()).hexdigest()},"
                     f"{shape[1] * 2},{shape[0] * 2},,JPEG,")
    write_text(folder / "manifest.csv", "\n".join(lines) + "\n")


def write_prepared_photos(root: Path, dataset: str, values: Mapping, per_class: Mapping[str, int] = PER_CLASS,
                          seed: int = 0) -> Path:
    """A photo dataset with ``per_class[split]`` images of every class, and a meta.json expecting them."""
    spec = DATASETS.get(dataset)
    shape = spec.image_shape(values)
    rng = np.random.default_rng(seed)
    counts = {}
    for split in paths.SPLITS:
        labels = [c for c in spec.classes for _ in range(per_class[split])]
        write_photo_split(root / split, labels, shape, rng, f"{dataset}/{split}")
        counts[split] = len(labels)
    write_json(root / "meta.json", {"dataset": dataset, "image_shape": list(shape), "splits": counts,
                                    "expected": counts, "classes": list(spec.classes), "seed": seed})
    return root


def write_prepared_captcha(root: Path, counts: dict[str, int], values: dict, seed: int = 0) -> Path:
    """Random-pixel CAPTCHA-shaped data in the prepared layout (for training tests, not realism)."""
    rng = np.random.default_rng(seed)
    alphabet = np.array(list(values["alphabet"]))
    for split, n in counts.items():
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        images = rng.integers(0, 256, (n, values["height"], values["width"], 3), dtype=np.uint8)
        np.save(folder / "images.npy", images)
        labels = ["".join(rng.choice(alphabet, values["length"])) for _ in range(n)]
        rows = [f"{label},{hashlib.sha256(images[i].tobytes()).hexdigest()}" for i, label in enumerate(labels)]
        (folder / "manifest.csv").write_text("label,sha256\n" + "\n".join(rows) + "\n")
    return root


def write_all(out_dir: Path, params: Params) -> list[str]:
    """Every photo dataset in params, small; returns their names. (CAPTCHAs come from their real stage.)"""
    written = []
    for name in DATASETS.names():
        if DATASETS.get(name).source and params.has_dataset(name):
            values = params.dataset(name).model_dump(mode="json")
            values.update(height=min(values["height"], 40), width=min(values["width"], 40))
            # Split sizes params fix are what validation expects: the fixture's own.
            n_classes = len(DATASETS.get(name).classes)
            values.update({split: PER_CLASS[split] * n_classes for split in paths.SPLITS if split in values})
            write_prepared_photos(out_dir / name, name, values)
            write_text(out_dir / f"{name}.params.yaml", yaml.safe_dump(values))
            written.append(name)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.fixture_data OUT_DIR")
    print(" ".join(write_all(Path(sys.argv[1]), load_params())))
