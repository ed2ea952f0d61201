"""Seeded CAPTCHA labels and images: the same seed gives the same bytes, whatever the worker count.

Kept free of Keras and pandas: every generation worker process imports this module.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np
from captcha import image as captcha_image

from transferbench.core.errors import UserError

CAPTCHA_VERSION = "0.7.1"
GENERATOR = f"captcha=={CAPTCHA_VERSION}"


def check_captcha_version() -> None:
    """Stop if the installed captcha is not the version whose drawing order we reproduce."""
    installed = version("captcha")
    if installed != CAPTCHA_VERSION:
        raise UserError(f"captcha {installed} is installed; seeded generation needs captcha=={CAPTCHA_VERSION} "
                           f"(it replaces captcha.image.secrets, whose calls change between versions): "
                           f"pip install captcha=={CAPTCHA_VERSION}")


def draw_labels(seed: int, counts: Mapping[str, int], alphabet: str, length: int) -> dict[str, list[str]]:
    """Distinct random strings per split (in ``counts`` order); no string appears twice in any split."""
    total = sum(counts.values())
    if total > len(alphabet) ** length:
        raise ValueError(f"{total} distinct labels asked for, but only {len(alphabet)}**{length} strings exist")
    rng = np.random.default_rng(seed)
    symbols = np.frombuffer(alphabet.encode("ascii"), dtype=np.uint8)
    # One base-len(alphabet) digit per position rather than one integer below len(alphabet)**length:
    # the same uniform draw, without overflowing int64 for long labels.
    unique: dict[bytes, None] = {}
    while len(unique) < total:
        digits = rng.integers(0, len(alphabet), size=(total - len(unique), length))
        codes = np.ascontiguousarray(symbols[digits]).view(f"S{length}").ravel()
        unique.update(dict.fromkeys(codes.tolist()))  # dicts keep first occurrences in order
    labels = [code.decode("ascii") for code in unique]
    out, start = {}, 0
    for split, n in counts.items():
        out[split] = labels[start:start + n]
        start += n
    return out


class _SeededSecrets(random.Random):
    """Stands in for the ``secrets`` module inside captcha.image: same calls, seeded draws."""

    def randbelow(self, n: int) -> int:
        return self.randrange(n)

    def randbits(self, k: int) -> int:
        return self.getrandbits(k)


@contextlib.contextmanager
def seeded_captcha(key: str) -> Iterator[None]:
    """Make captcha.image draw from a generator seeded by ``key`` for the duration of the block.

    Replaces a module global, so it is not thread-safe: one image at a time per process.
    """
    saved = captcha_image.secrets
    # Through the module's namespace: the stand-in only has the calls captcha.image makes, it is no module.
    vars(captcha_image)["secrets"] = _SeededSecrets(key)
    try:
        yield
    finally:
        captcha_image.secrets = saved


@functools.lru_cache(maxsize=4)
def _generator(width: int, height: int) -> captcha_image.ImageCaptcha:
    # Loading the fonts costs more than drawing an image: one generator per process and size.
    return captcha_image.ImageCaptcha(width=width, height=height)


def image_key(seed: int, split: str, index: int) -> str:
    """An image's own seed: it depends on where the image is, never on how the work was divided."""
    return f"{seed}/{split}/{index}"


def render(text: str, key: str, width: int, height: int) -> np.ndarray:
    """One CAPTCHA of ``text`` as a uint8 (height, width, 3) array; same key, same pixels."""
    with seeded_captcha(key):
        img = _generator(width, height).generate_image(text)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


@dataclass(frozen=True)
class Chunk:
    """Images [start, start + len(labels)) of one split, to be written into ``images_path``."""

    images_path: str
    split: str
    start: int
    labels: tuple[str, ...]
    seed: int
    width: int
    height: int

    @property
    def end(self) -> int:
        return self.start + len(self.labels)


def render_chunk(chunk: Chunk) -> list[str]:
    """Render a chunk into its rows of the .npy file (opened r+); return each image's sha256 hex."""
    images = np.lib.format.open_memmap(chunk.images_path, mode="r+")
    hashes = []
    for offset, text in enumerate(chunk.labels):
        index = chunk.start + offset
        arr = render(text, image_key(chunk.seed, chunk.split, index), chunk.width, chunk.height)
        images[index] = arr
        hashes.append(hashlib.sha256(arr.tobytes()).hexdigest())
    # On disk before the caller records the chunk as done, so a crash cannot leave a marked hole.
    images.flush()
    del images
    return hashes
