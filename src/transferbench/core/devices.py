"""One GPU per training process, so DVC's queue workers (`dvc queue start -j N`) do not share one.

DVC gives its workers no device: each would see every GPU and the backend would put them all on the
first. Before the backend starts, a stage that trains claims one GPU: a non-blocking exclusive lock
on ``tmp/gpus/gpu<i>.lock`` in the main repository (queue workers run in copies of it, and
DVC_ROOT names it), taking the first free index, and sets ``CUDA_VISIBLE_DEVICES`` to it. The lock is
held until the process exits (the kernel drops it then, also after a crash or a kill), so the next
stage of that worker, or another worker, can take the GPU. With every GPU taken it waits, saying so.

Nothing is claimed when the user set ``CUDA_VISIBLE_DEVICES`` (their choice always wins), on a
machine with fewer than two GPUs (nothing to share out), or for a run that spreads over every
visible GPU itself (``distribution: data_parallel``). The number of GPUs comes from
``nvidia-smi -L``, else from the ``/dev/nvidia<N>`` device files; ``TRANSFERBENCH_GPUS=<n>`` overrides
both (tests, or a machine where neither tells).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from transferbench.core import paths
from transferbench.core.errors import UserError

log = logging.getLogger(__name__)

GPUS_ENV = "TRANSFERBENCH_GPUS"
VISIBLE = "CUDA_VISIBLE_DEVICES"
WAIT_SECONDS = 5.0  # between tries while every GPU is taken: a training holds one for minutes or hours
# Distributions that use every visible GPU in one process (keras.distribution.DataParallel,
# tf.distribute.MirroredStrategy), so they claim none.
ALL_VISIBLE = frozenset({"data_parallel"})


@dataclass
class Claim:
    """A GPU this process holds until it exits; ``handle`` keeps the lock alive."""

    index: int
    path: Path
    handle: IO[str]


_held: Claim | None = None  # the process's claim: dropped only when the process ends


def lock_dir() -> Path:
    """``tmp/gpus`` of the main repository, shared by every queue worker's copy."""
    return paths.main_repo_root() / paths.TMP.relative_to(paths.ROOT) / "gpus"


def gpu_count() -> int:
    """GPUs on this machine: ``TRANSFERBENCH_GPUS`` if set, else ``nvidia-smi -L``, else /dev/nvidia<N>."""
    forced = os.environ.get(GPUS_ENV)
    if forced is not None:
        if not forced.strip().isdigit():
            raise UserError(f"{GPUS_ENV}={forced!r} is not a GPU count; accepted: a whole number >= 0 "
                            "(or unset, to count them with nvidia-smi)")
        return int(forced)
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
        return sum(1 for line in listed.splitlines() if line.startswith("GPU "))
    except (OSError, subprocess.SubprocessError):  # no driver tools: the device files still tell
        return sum(1 for p in Path("/dev").glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name))


def try_claim(count: int, folder: Path) -> Claim | None:
    """The first of ``count`` GPUs whose lock in ``folder`` is free, now locked by this process; None if all taken."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        path = folder / f"gpu{index}.lock"
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the process's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")  # who holds it, for a person looking at the folder
        handle.flush()
        return Claim(index, path, handle)
    return None


def claim_gpu(distribution: str = "none", *, wait_seconds: float = WAIT_SECONDS) -> int | None:
    """Claim one GPU for this process and make it the only one the backend sees; the index, or None if none
    is claimed (the user's CUDA_VISIBLE_DEVICES, fewer than two GPUs, or a distribution over all of them).

    Call it before Keras' backend starts: CUDA reads CUDA_VISIBLE_DEVICES once, at initialisation.
    """
    global _held
    if _held is not None:
        return _held.index
    if VISIBLE in os.environ:
        log.info("devices: %s=%r as set; no GPU claimed", VISIBLE, os.environ[VISIBLE])
        return None
    if distribution in ALL_VISIBLE:
        log.info("devices: distribution %s uses every visible GPU; no GPU claimed", distribution)
        return None
    count = gpu_count()
    if count < 2:
        return None
    folder = lock_dir()
    waiting_since = None
    while (claim := try_claim(count, folder)) is None:
        if waiting_since is None:
            waiting_since = time.monotonic()
            log.warning("devices: all %d GPUs are taken by other trainings (locks in %s); waiting for one "
                        "to finish", count, folder)
        time.sleep(wait_seconds)
    _held = claim
    os.environ[VISIBLE] = str(claim.index)
    waited = f" after waiting {time.monotonic() - waiting_since:.0f} s" if waiting_since is not None else ""
    log.info("devices: GPU %d of %d claimed%s (%s=%d, lock %s)", claim.index, count, waited, VISIBLE,
             claim.index, claim.path)
    return claim.index
