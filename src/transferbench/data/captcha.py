"""Seeded CAPTCHA labels and images: the same seed gives the same bytes, whatever the worker count.

Two styles: ``seed000`` draws what the reference study's ImageMagick code drew (rotated letters, blur,
implode, swirl, impulse noise, JPEG) with Pillow and NumPy; ``plain`` is the ``captcha`` package's image.
Kept free of Keras and pandas: every generation worker process imports this module.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Literal, get_args

import numpy as np
from captcha import image as captcha_image
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from transferbench.core.errors import UserError

CAPTCHA_VERSION = "0.7.1"
Style = Literal["seed000", "plain"]
STYLES: tuple[str, ...] = get_args(Style)
# Part of seed000's generator string: raise it whenever seed000's drawing or its order of draws changes,
# so prepared data of the old drawing no longer matches its fingerprint and is regenerated.
SEED000_VERSION = 1


def generator(style: Style) -> str:
    """What draws the images of ``style``, as written in the generation record and its fingerprint."""
    if style == "plain":
        return f"captcha=={CAPTCHA_VERSION}"
    return f"pillow=={version('pillow')} seed000/{SEED000_VERSION}"


def check_captcha_version() -> None:
    """Stop if the installed captcha is not the version whose drawing order we reproduce."""
    installed = version("captcha")
    if installed != CAPTCHA_VERSION:
        raise UserError(f"captcha {installed} is installed; seeded generation needs captcha=={CAPTCHA_VERSION} "
                           f"(it replaces captcha.image.secrets, whose calls change between versions): "
                           f"pip install captcha=={CAPTCHA_VERSION}")


def symbol_weights(alphabet: str, style: Style) -> list[int]:
    """Relative odds of each symbol of ``alphabet`` at each position: seed000's letters 2, the rest 1; plain all 1."""
    if style == "plain":
        return [1] * len(alphabet)
    # SecureRandom.alphanumeric draws from A-Z a-z 0-9 and the reference code upcased the result,
    # so a letter came up through two of the 62 symbols and a digit through one.
    return [2 if symbol.isalpha() else 1 for symbol in alphabet]


def draw_labels(seed: int, counts: Mapping[str, int], alphabet: str, length: int,
                weights: Sequence[int] | None = None) -> dict[str, list[str]]:
    """Distinct random strings per split (in ``counts`` order); no string appears twice in any split.

    ``weights``: one positive integer per symbol, its relative odds at each position (None: all alike).
    """
    total = sum(counts.values())
    if total > len(alphabet) ** length:
        raise ValueError(f"{total} distinct labels asked for, but only {len(alphabet)}**{length} strings exist")
    weights = [1] * len(alphabet) if weights is None else list(weights)
    if len(weights) != len(alphabet) or min(weights) < 1:
        raise ValueError(f"symbol weights {weights} for alphabet {alphabet!r}; accepted: one integer >= 1 per symbol")
    rng = np.random.default_rng(seed)
    # A symbol of weight w appears w times in the pool, so a uniform draw from the pool has the weighted odds;
    # with all weights 1 the pool is the alphabet and the draws are those of the unweighted draw.
    pool = np.repeat(np.frombuffer(alphabet.encode("ascii"), dtype=np.uint8), weights)
    # One base-len(pool) digit per position rather than one integer below len(pool)**length:
    # the same uniform draw, without overflowing int64 for long labels.
    unique: dict[bytes, None] = {}
    while len(unique) < total:
        digits = rng.integers(0, len(pool), size=(total - len(unique), length))
        codes = np.ascontiguousarray(pool[digits]).view(f"S{length}").ravel()
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


def render(text: str, key: str, width: int, height: int, *, style: Style) -> np.ndarray:
    """One CAPTCHA of ``text`` as a uint8 (height, width, 3) array; same key, same pixels."""
    if style == "plain":
        with seeded_captcha(key):
            img = _generator(width, height).generate_image(text)
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    if style == "seed000":
        return render_seed000(text, key, width, height)
    raise ValueError(f"CAPTCHA style {style!r}; accepted: {', '.join(STYLES)}")


# ---- seed000: the reference study's ImageMagick distortions, redrawn with Pillow and NumPy ----------

ROTATION = 20.0  # degrees either way, per character, as the reference code's random rotation
BLUR = (0.4, 1.0)  # Gaussian blur radius in pixels
IMPLODE = (0.05, 0.25)  # ImageMagick's implode amount; above about 0.3 the middle letters shrink to dots
SWIRL = 40.0  # degrees at the centre, either way; fades to none at the edge as ImageMagick's swirl does
IMPULSE = 0.10  # ImageMagick's impulse noise: a tenth of each channel's values, half set to 0, half to 255
# The reference code's JPEG quality is unknown: 75, the default of libjpeg and Pillow.
JPEG_QUALITY = 75


def image_rng(key: str) -> np.random.Generator:
    """The generator every random draw of one seed000 image comes from: a function of its key alone."""
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest(), "big"))


def render_seed000(text: str, key: str, width: int, height: int) -> np.ndarray:
    """A seed000 CAPTCHA: rotated letters, blurred, imploded, swirled, impulse noise, through JPEG."""
    rng = image_rng(key)
    ink = _letters(text, rng, width, height)
    ink = ink.filter(ImageFilter.GaussianBlur(float(rng.uniform(*BLUR))))
    warped = _implode_and_swirl(np.asarray(ink, dtype=np.float32), float(rng.uniform(*IMPLODE)),
                                float(rng.uniform(-SWIRL, SWIRL)))
    grey = (255.5 - warped).clip(0, 255).astype(np.uint8)  # black ink on white, rounded
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    # Per channel, as ImageMagick's noise: a dot is black, white or coloured.
    noise = rng.random(rgb.shape)
    rgb[noise < IMPULSE / 2] = 0
    rgb[noise >= 1 - IMPULSE / 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling="4:2:0")
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.uint8)


def _letters(text: str, rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """The ink (255) of ``text`` on 0: one rotated, jittered letter per equal slot across the width."""
    margin = max(2, width // 32)
    slot = (width - 2 * margin) / len(text)
    # As large as the height allows while a letter (0.6 of the size wide in this font) fits its slot.
    largest = max(8, min(int(0.6 * height), int(slot / 0.6)))
    size = int(rng.integers(int(0.85 * largest), largest + 1))
    angles = rng.uniform(-ROTATION, ROTATION, len(text))
    shift_x = rng.uniform(-0.12, 0.12, len(text)) * slot
    shift_y = rng.uniform(-0.12, 0.12, len(text)) * height
    ink = Image.new("L", (width, height), 0)
    for i, symbol in enumerate(text):
        letter = _glyph(symbol, size).rotate(float(angles[i]), resample=Image.Resampling.BILINEAR, expand=True)
        x = margin + (i + 0.5) * slot + shift_x[i] - letter.width / 2
        y = height / 2 + shift_y[i] - letter.height / 2
        ink.paste(255, (round(x), round(y)), mask=letter)
    return ink


@functools.lru_cache(maxsize=4096)
def _glyph(symbol: str, size: int) -> Image.Image:
    # Drawing a glyph costs more than rotating one: each (symbol, size) is drawn once per process.
    font = _font(size)
    left, top, right, bottom = map(int, font.getbbox(symbol))  # whole pixels with the basic layout
    glyph = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(glyph).text((1 - left, 1 - top), symbol, font=font, fill=255)
    return glyph


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    # DroidSansMono, shipped with captcha. The basic layout, because whether Pillow finds libraqm differs
    # between machines, and one letter at a time needs no shaping.
    return ImageFont.truetype(captcha_image.DEFAULT_FONTS[0], size, layout_engine=ImageFont.Layout.BASIC)


@functools.lru_cache(maxsize=4)
def _polar(width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: offsets from the centre scaled to [-1, 1] on each axis, their radius, log sin(pi r / 2).

    The same for every image of a size, so only the random amounts are drawn per image.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    u, v = (x - cx) / max(cx, 0.5), (y - cy) / max(cy, 0.5)
    radius = np.hypot(u, v)
    log_sin = np.zeros_like(radius)
    inside = (radius > 0) & (radius < 1)
    log_sin[inside] = np.log(np.sin(np.pi * radius[inside] / 2))
    return u, v, radius, log_sin


def _implode_and_swirl(ink: np.ndarray, implode: float, swirl: float) -> np.ndarray:
    """ImageMagick's implode then swirl, as one bilinear resampling; both act inside the ellipse the image bounds."""
    height, width = ink.shape
    u, v, radius, log_sin = _polar(width, height)
    inside = radius < 1
    # Implode samples the source at sin(pi r / 2) ** -amount times the distance, pulling it toward the centre;
    # swirl turns the point by its angle times (1 - r) ** 2. Swirl keeps the radius, so implode's factor
    # at the swirled point is the factor at the point itself.
    factor = np.exp(-implode * log_sin)
    angle = np.where(inside, np.radians(swirl) * (1 - radius) ** 2, 0.0)
    cos, sin = np.cos(angle), np.sin(angle)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    x = np.clip(factor * (cos * u - sin * v) * cx + cx, 0, width - 1)
    y = np.clip(factor * (sin * u + cos * v) * cy + cy, 0, height - 1)
    x0 = np.minimum(x.astype(np.intp), max(width - 2, 0))
    y0 = np.minimum(y.astype(np.intp), max(height - 2, 0))
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    top = ink[y0, x0] * (1 - fx) + ink[y0, x1] * fx
    bottom = ink[y1, x0] * (1 - fx) + ink[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


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
    style: Style

    @property
    def end(self) -> int:
        return self.start + len(self.labels)


def render_chunk(chunk: Chunk) -> list[str]:
    """Render a chunk into its rows of the .npy file (opened r+); return each image's sha256 hex."""
    images = np.lib.format.open_memmap(chunk.images_path, mode="r+")
    hashes = []
    for offset, text in enumerate(chunk.labels):
        index = chunk.start + offset
        arr = render(text, image_key(chunk.seed, chunk.split, index), chunk.width, chunk.height, style=chunk.style)
        images[index] = arr
        hashes.append(hashlib.sha256(arr.tobytes()).hexdigest())
    # On disk before the caller records the chunk as done, so a crash cannot leave a marked hole.
    images.flush()
    del images
    return hashes
