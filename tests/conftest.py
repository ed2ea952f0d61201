"""Shared test helpers: the real params.yaml, and small prepared datasets made on the fly."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from transferbench.core import paths


@pytest.fixture
def params() -> dict:
    """A fresh copy of the repository's params.yaml, to modify per test."""
    with open(paths.PARAMS, encoding="utf-8") as f:
        return copy.deepcopy(yaml.safe_load(f))


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
