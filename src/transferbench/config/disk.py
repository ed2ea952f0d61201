"""Will a stage's image arrays fit on the disk? Asked before any work, so a size that cannot fit is a
config error naming the sizes, not a failed write after minutes of decoding or rendering."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from transferbench.core.errors import ConfigError
from transferbench.core.files import free_bytes, size_text

MARGIN = 256 * 2**20  # kept free for manifests, reports and everything else on that disk


def array_bytes(counts: Mapping[str, int], shape: tuple[int, ...]) -> int:
    """Bytes of one uint8 array of ``shape`` per image, over every split's count."""
    return sum(counts.values()) * math.prod(shape)


def check_fits(where: str, counts: Mapping[str, int], shape: tuple[int, int, int], folder: Path,
               free: int | None = None) -> int:
    """ConfigError unless the arrays for ``counts`` images of ``shape`` fit under ``folder``; return their bytes.

    What ``folder`` already holds counts as free: a resumed run reuses it, another run's is deleted.
    ``free`` defaults to the free space of the disk ``folder`` is on.
    """
    folder = Path(folder)
    needed = array_bytes(counts, shape)
    if free is None:
        free = free_bytes(folder) + allocated(folder)
    if needed + MARGIN > free:
        splits = ", ".join(f"{split} {n:,}" for split, n in counts.items())
        raise ConfigError(
            f"{where}: {sum(counts.values()):,} images of {shape[1]}x{shape[0]}x{shape[2]} ({splits}) need "
            f"{size_text(needed)} under {folder}, but that disk has {size_text(free)} free "
            f"(keeping {size_text(MARGIN)} spare); "
            f"accepted: fewer images or a smaller {where}.height / {where}.width, or more free space there")
    return needed


def allocated(folder: Path) -> int:
    """Bytes the files under ``folder`` take on disk: blocks, not sizes, as arrays start sparse and reserve
    their rows as the work goes on."""
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file() and not p.is_symlink())

