"""How many worker processes a stage may start."""

from __future__ import annotations

import os


def cpu_count() -> int:
    """The cores this process may use (a container or `taskset` can allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
