"""One photo in, one checked RGB uint8 array of the prepared size out; or a reason it cannot be used.

Runs inside preparation's worker processes, so it imports only Pillow, numpy and the standard library.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from transferbench.core.files import atomic_path

# Pillow's own default limit (~89 Mpx, 1/4 GiB as RGB): a file declaring more is treated as a
# decompression bomb and never decoded. Photos from the reference studies' sources are far below it. A lower
# limit is honoured; a higher one is not, since Pillow's own check (made an error here) comes first.
MAX_PIXELS = 89_478_485

# Pillow's bilinear filter widens with the scale factor when shrinking (antialiased, unlike
# tf.image.resize's default) and is plain bilinear when enlarging, as cv2.resize was for
# reference study 004's CIFAR-10. Measured on 640x480 JPEGs after draft(): within 1-2 dB PSNR of bicubic and Lanczos
# against an area-averaged reference, and 15-25 % faster than either.
RESAMPLE = Image.Resampling.BILINEAR
# Images still 3x larger than the target after draft() (PNGs, small JPEGs) are first shrunk by an
# integer factor: much faster on big PNGs, and Pillow documents 3.0 as indistinguishable from none.
REDUCING_GAP = 3.0

# Pixel statistics (0-255 scale) of an image that is data. A blank or constant image has std 0;
# CAPTCHAs measure 24-71 and photos far more, so 2 flags only images with (almost) nothing in them.
# Defined here, where worker processes read them without great-expectations, and used by the
# validation suites too: an image validation would reject is quarantined here, where it is counted.
MIN_PIXEL_STD = 2.0
PIXEL_MEAN_RANGE = (1.0, 254.0)      # exclusive: an all-black or all-white image is not data

# Why an item is dropped: the text before the first ':' of every quarantine reason.
REASONS = ("unreadable", "empty", "not an image", "too large", "truncated", "decode error", "unsupported",
           "blank", "duplicate", "leak", "label conflict")
PIXELS = "pixels"  # the format of an item a source ships as a pixel array (CIFAR-10), not as a file
# Formats a name may promise for one another: an MPO is a JPEG with extra frames, which every JPEG reader shows.
_SAME_FORMAT = {"MPO": "JPEG"}

_ORIENTATION = {  # EXIF orientation -> the transpose that shows the photo upright (as ImageOps.exif_transpose)
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_GREY_16 = ("I;16", "I;16L", "I;16B", "I;16N")
_DRAFTABLE = ("JPEG", "MPO")  # formats whose draft() decodes at reduced scale


class Rejected(Exception):
    """The item cannot be used; ``reason`` is ``'<kind>: <detail>'`` with kind one of REASONS."""

    def __init__(self, kind: str, detail: str):
        assert kind in REASONS, kind
        super().__init__(f"{kind}: {detail}")
        self.kind, self.reason = kind, f"{kind}: {detail}"


@dataclass(frozen=True)
class Prepared:
    """A usable image: pixels (height, width, 3) uint8, the stored size, and what was converted."""

    pixels: np.ndarray
    orig_width: int
    orig_height: int
    converted: str  # '' or e.g. 'CMYK->RGB', 'P->RGB; EXIF orientation 6'
    format: str  # what the bytes are, as Pillow names it (JPEG, PNG, ...), or PIXELS


def prepare_image(item: bytes | np.ndarray, height: int, width: int, max_pixels: int = MAX_PIXELS) -> Prepared:
    """Decode (bytes) or take (uint8 array) one image, check it, squash it to (height, width) RGB."""
    img = _from_array(item) if isinstance(item, np.ndarray) else _open(item, max_pixels)
    real_format = img.format or PIXELS
    orig_width, orig_height = img.size
    orientation = _decode(img, (width, height))
    img, converted = _to_rgb_or_rgba(img)
    img = _resize(img, (width, height), orientation)
    pixels = np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    assert pixels.shape == (height, width, 3), pixels.shape
    _check_not_blank(pixels)
    steps = [converted] if converted else []
    steps += [f"EXIF orientation {orientation}"] if orientation in _ORIENTATION else []
    return Prepared(pixels, orig_width, orig_height, "; ".join(steps), real_format)


def format_note(key: str, real_format: str) -> str:
    """'' or a note that the name's extension promises another format than the bytes have (a PNG named .jpg).

    Pillow reads by content, so such a file is kept; the note says where other readers may disagree.
    """
    suffix = PurePosixPath(key).suffix.lower()
    named = Image.registered_extensions().get(suffix)
    if named is None or real_format == PIXELS or _SAME_FORMAT.get(real_format, real_format) == named:
        return ""
    return f"format mismatch: {real_format} named {suffix}"


def pixel_sha256(pixels: np.ndarray) -> str:
    """sha256 of the stored bytes, as the validation stage computes it for images[i]."""
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


# ---- decoding ------------------------------------------------------------------------------------

def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open (headers only) and size-check the encoded image."""
    if len(data) == 0:
        raise Rejected("empty", "0 bytes")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; a warning is as much a bomb as the error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise Rejected("too large", str(err)) from None
    except UnidentifiedImageError:
        raise Rejected("not an image", f"{len(data):,} bytes that no Pillow format reads "
                                       f"(starting {data[:8]!r})") from None
    except Exception as err:  # a damaged header: any plugin error is this file's problem, not ours
        raise _decode_error(err) from None
    w, h = img.size
    if w * h > max_pixels:
        raise Rejected("too large", f"{w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,}")
    if w < 1 or h < 1:
        raise Rejected("decode error", f"declared size {w}x{h}")
    return img


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8), 1 when absent or unreadable.

    Applied, unlike the reference studies' Keras loaders: a label describes the photo as every viewer
    shows it, and a sideways photo is an accident of the camera, not part of the data. Each turned image
    says so in its manifest row (``converted``), so the difference from the reference studies can be
    counted.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data" once per such photo would bury the log
            value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # broken EXIF is common in the wild and never a reason to lose the pixels
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _decode(img: Image.Image, size: tuple[int, int]) -> int:
    """Decode the pixels, JPEGs at the smallest scale that stays at least ``size``; return the orientation."""
    # A JPEG's EXIF is in its header, so its orientation is known before decoding; PNG loads the
    # whole image to find EXIF, so other formats are asked after loading.
    orientation = _orientation(img) if img.format in _DRAFTABLE else 1
    img.draft("RGB", _turned(size, orientation))  # JPEG only: libjpeg decodes at 1/2, 1/4 or 1/8 scale
    # Never decode a truncated file as a grey-padded image, whatever another import set globally.
    saved, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        img.load()
    except Exception as err:
        raise _decode_error(err) from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved
    return orientation if img.format in _DRAFTABLE else _orientation(img)


def _turned(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    # Orientations 5-8 turn the photo a quarter: resize to the transposed size, then turn the small image.
    return (size[1], size[0]) if orientation >= 5 else size


def _resize(img: Image.Image, size: tuple[int, int], orientation: int) -> Image.Image:
    """Squash to ``size`` (width, height), flatten transparency on white, turn upright."""
    # Squashed without keeping the aspect ratio or cropping, as the reference studies' Keras loaders did
    # (flow_from_directory's target_size, image_dataset_from_directory's image_size).
    img = img.resize(_turned(size, orientation), RESAMPLE, reducing_gap=REDUCING_GAP)
    if img.mode == "RGBA":
        img = _on_white(img)
    if orientation in _ORIENTATION:
        img = img.transpose(_ORIENTATION[orientation])
    return img


def _decode_error(err: Exception) -> Rejected:
    # Without object addresses ("<_io.BytesIO object at 0x7f...>"): the same file, the same reason.
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", f"{type(err).__name__}: {err}".strip())
    if isinstance(err, EOFError) or "truncated" in str(err).lower():
        return Rejected("truncated", text)
    return Rejected("decode error", text)


def _from_array(array: np.ndarray) -> Image.Image:
    """A source's uint8 (H, W, 3) pixels (CIFAR-10) as an image; anything else is unsupported."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise Rejected("unsupported", f"array of {array.dtype} {array.shape}; accepted: uint8 (H, W, 3)")
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


# ---- modes ---------------------------------------------------------------------------------------

def _to_rgb_or_rgba(img: Image.Image) -> tuple[Image.Image, str]:
    """RGB, or RGBA where the image has transparency (made white after resizing); and what changed."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img, ""
    if mode in _GREY_16:
        # Pillow clips 16-bit grey to 0-255 instead of scaling it: 65535 / 257 = 255 exactly.
        grey = np.round(np.asarray(img).astype(np.float64) / 257).astype(np.uint8)
        return Image.fromarray(np.stack([grey] * 3, axis=-1), mode="RGB"), f"{mode}->RGB"
    if mode in ("I", "F"):
        return _wide_grey(img), f"{mode}->RGB"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        try:
            return img.convert("RGBA"), f"{mode}->RGB" if mode != "RGB" else "transparent colour->white"
        except ValueError as err:
            raise Rejected("unsupported", f"mode {mode} with transparency: {err}") from None
    if mode in ("1", "L", "P", "CMYK", "YCbCr"):
        # CMYK without its ICC profile, as Keras and every plain convert('RGB') do: colours are close, not exact.
        return img.convert("RGB"), f"{mode}->RGB"
    raise Rejected("unsupported", f"mode {mode}; accepted: RGB, RGBA, CMYK, YCbCr, 1, L, LA, I;16, P, PA "
                                  "(and I or F with values 0-255)")


def _wide_grey(img: Image.Image) -> Image.Image:
    """32-bit int or float grey: usable only when its values are already 0-255, since no range is stored."""
    values = np.asarray(img)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high > 255:
        raise Rejected("unsupported", f"mode {img.mode} with values in [{low:g}, {high:g}]: the file does not "
                                      "say which range is black and white; accepted: values within 0-255")
    grey = np.round(values).astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=-1), mode="RGB")


def _on_white(img: Image.Image) -> Image.Image:
    """Composite RGBA on white: a transparent background shows as the white page viewers draw it on."""
    background = Image.new("RGB", img.size, (255, 255, 255))
    background.paste(img, mask=img.getchannel("A"))
    return background


def _check_not_blank(pixels: np.ndarray) -> None:
    # Exact integer sums, the formula transferbench.data.validation uses, so both agree at the thresholds.
    size = pixels.size
    total = int(pixels.sum(dtype=np.uint64))
    squares = int(np.einsum("i,i->", pixels.ravel(), pixels.ravel(), dtype=np.uint64))
    mean = total / size
    std = math.sqrt((size * squares - total * total) / float(size) ** 2)
    low, high = PIXEL_MEAN_RANGE
    if std <= MIN_PIXEL_STD or not low < mean < high:
        raise Rejected("blank", f"pixel mean {mean:.1f}, std {std:.2f} (accepted: std > {MIN_PIXEL_STD}, "
                                f"{low} < mean < {high})")


# ---- one chunk, in a worker process ----------------------------------------------------------------

@dataclass(frozen=True)
class Chunk:
    """Items [start, start + len(keys)) of one split, decoded into ``pixels_path`` (usable ones only)."""

    split: str
    start: int
    keys: tuple[str, ...]
    raw_dir: str
    pixels_path: str
    loader: str | None  # module whose load(raw_dir, key) reads an item; None: the file raw_dir/key
    height: int
    width: int
    max_pixels: int

    @property
    def end(self) -> int:
        return self.start + len(self.keys)

    @property
    def name(self) -> str:
        return chunk_name(self.split, self.start, self.end)


def chunk_name(split: str, start: int, end: int) -> str:
    """Names that sort in the order of the items they hold."""
    return f"{split}-{start:09d}-{end:09d}"


def read_item(raw_dir: str, key: str, loader: str | None) -> bytes | np.ndarray:
    """An item's encoded bytes or pixels, as its source stores them (see transferbench.data.raw)."""
    if loader:
        item = importlib.import_module(loader).load(Path(raw_dir), key)
        if not isinstance(item, (bytes, np.ndarray)):
            raise TypeError(f"{loader}.load({key!r}) returned {type(item).__name__}; accepted: bytes or numpy array")
        return item
    return (Path(raw_dir) / key).read_bytes()


def decode_item(chunk: Chunk, key: str) -> tuple[np.ndarray | None, dict[str, Any]]:
    """(pixels or None, the item's record for the chunk's marker)."""
    try:
        item = read_item(chunk.raw_dir, key, chunk.loader)
    except OSError as err:  # a missing or unreadable raw file; a source's other errors are bugs and propagate
        # strerror, not str(err): the absolute path would make the output depend on where raw data lives.
        return None, {"key": key, "reason": f"unreadable: {type(err).__name__}: {err.strerror or err}"}
    try:
        prepared = prepare_image(item, chunk.height, chunk.width, chunk.max_pixels)
    except Rejected as rejected:
        return None, {"key": key, "reason": rejected.reason}
    return prepared.pixels, {"key": key, "sha256": pixel_sha256(prepared.pixels),
                             "orig_width": prepared.orig_width, "orig_height": prepared.orig_height,
                             "converted": prepared.converted, "format": prepared.format,
                             "format_note": format_note(key, prepared.format)}


def decode_chunk(chunk: Chunk) -> list[dict[str, Any]]:
    """Decode a chunk's items; write the usable ones' pixels, in order, to ``chunk.pixels_path``.

    Returns one record per item: key and reason when it was rejected, else key, sha256, orig_width,
    orig_height, converted, format, format_note. The file is complete before the caller records the chunk as done.
    """
    pixels = np.empty((len(chunk.keys), chunk.height, chunk.width, 3), dtype=np.uint8)
    records, n = [], 0
    for key in chunk.keys:
        decoded, record = decode_item(chunk, key)
        if decoded is not None:
            pixels[n] = decoded
            n += 1
        records.append(record)
    with atomic_path(chunk.pixels_path) as tmp, open(tmp, "wb") as f:
        np.save(f, pixels[:n])  # an open file: np.save would add '.npy' to the temporary name
    return records
