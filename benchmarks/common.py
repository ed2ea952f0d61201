"""What every benchmark prints about the machine it ran on, so figures can be compared like for like."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `stages` without an installed package

from stages.parallel import cpu_count  # noqa: E402


def machine(*software: str) -> str:
    """Cores, CPU model, Python and the given package versions, in one line."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return ", ".join([f"{cpu_count()} usable cores ({os.cpu_count()} online), {cpu}; Python {platform.python_version()}",
                      *software])
