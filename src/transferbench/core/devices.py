"""A slot on one GPU per training process, k slots per GPU, so training processes (DVC's queue workers,
the train stage's own workers) share the GPUs out instead of all landing on the first.

DVC gives its workers no device: each would see every GPU and the backend would put them all on the
first. Before the backend starts, a process that trains claims a slot: a non-blocking exclusive lock
on ``tmp/gpus/gpu<i>.lock`` (slot 0 of GPU i) or ``gpu<i>-<j>.lock`` (slot j) in the main repository
(queue workers run in copies of it, and DVC_ROOT names it), taking the first free one (slot 0 of every
GPU before slot 1 of any, so the GPUs fill evenly), and sets ``CUDA_VISIBLE_DEVICES`` to its GPU. The
lock is held until the process exits (the kernel drops it then, also after a crash or a kill), so the
next stage of that worker, or another worker, can take the slot. With every slot taken it waits, saying so.

k is params' ``gpu_runs_per_device`` (default 1: one training per GPU, as before it existed). The small
batches of the reference recipes leave a GPU mostly idle (docs/benchmarks.md), so k > 1 trains k
runs on one GPU at once; each of them then gets a share of the GPU's memory, set before its backend
starts: ``XLA_PYTHON_CLIENT_MEM_FRACTION`` = SHARED_MEMORY / k for JAX (which otherwise takes 75% for
one process), ``TF_FORCE_GPU_ALLOW_GROWTH`` for TensorFlow (which otherwise takes it all); the user's
own values of either win.

Nothing is claimed when the user set ``CUDA_VISIBLE_DEVICES`` (their choice always wins), where there
is one slot or none (no GPU, or one GPU with k = 1: nothing to share out), or for a run that spreads
over every visible GPU itself (``distribution: data_parallel``). The number of GPUs comes from
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
WAIT_SECONDS = 5.0  # between tries while every slot is taken: a training holds one for minutes or hours
JAX_MEMORY = "XLA_PYTHON_CLIENT_MEM_FRACTION"
TF_GROWTH = "TF_FORCE_GPU_ALLOW_GROWTH"
# The share of a GPU's memory that its k slots' processes preallocate together (JAX): below 1, as each
# process also holds a CUDA context (~0.5 GB) outside its pool.
SHARED_MEMORY = 0.8
# Distributions that use every visible GPU in one process (keras.distribution.DataParallel,
# tf.distribute.MirroredStrategy), so they claim none.
ALL_VISIBLE = frozenset({"data_parallel"})


@dataclass
class Claim:
    """A slot of a GPU this process holds until it exits; ``handle`` keeps the lock alive."""

    index: int
    path: Path
    handle: IO[str]
    slot: int = 0


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


def lock_name(index: int, slot: int) -> str:
    """Slot 0 keeps the name a GPU's one lock had before slots, so one-per-GPU claims see the same files."""
    return f"gpu{index}.lock" if slot == 0 else f"gpu{index}-{slot}.lock"


def try_claim(count: int, folder: Path, per_gpu: int = 1) -> Claim | None:
    """The first of ``count`` GPUs x ``per_gpu`` slots whose lock in ``folder`` is free, now locked by this
    process (slot 0 of every GPU first); None if all are taken."""
    folder.mkdir(parents=True, exist_ok=True)
    for slot in range(per_gpu):
        for index in range(count):
            path = folder / lock_name(index, slot)
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
            return Claim(index, path, handle, slot)
    return None


def shares_gpus(distribution: str = "none") -> bool:
    """Whether training processes claim slots at all: not when the user chose the devices
    (CUDA_VISIBLE_DEVICES) or one run spreads over every GPU (a distribution in ALL_VISIBLE)."""
    return VISIBLE not in os.environ and distribution not in ALL_VISIBLE


def slot_count(distribution: str = "none", per_gpu: int = 1) -> int:
    """Training processes the GPUs take at once: GPUs x ``per_gpu``; 1 where no slot is claimed (see
    :func:`shares_gpus`), and 1 on a machine without GPUs (the CPU trains one run at a time)."""
    if not shares_gpus(distribution):
        return 1
    return max(1, gpu_count() * per_gpu)


def share_memory(per_gpu: int) -> None:
    """Each of ``per_gpu`` processes on a GPU takes its share of the memory (the user's settings win)."""
    os.environ.setdefault(JAX_MEMORY, f"{SHARED_MEMORY / per_gpu:.3f}")
    os.environ.setdefault(TF_GROWTH, "true")


def claim_gpu(distribution: str = "none", *, per_gpu: int = 1, wait_seconds: float = WAIT_SECONDS) -> int | None:
    """Claim a slot of a GPU (``per_gpu`` slots each) for this process and make that GPU the only one the
    backend sees; the GPU's index, or None if none is claimed (the user's CUDA_VISIBLE_DEVICES, fewer than
    two slots, or a distribution over all GPUs). With ``per_gpu`` > 1 the process also takes only its
    share of the GPU's memory (:func:`share_memory`).

    Call it before Keras' backend starts: CUDA reads CUDA_VISIBLE_DEVICES once, at initialisation.
    """
    global _held
    if per_gpu < 1:
        raise UserError(f"gpu_runs_per_device={per_gpu!r}; accepted: a whole number >= 1")
    if _held is not None:
        return _held.index
    if VISIBLE in os.environ:
        log.info("devices: %s=%r as set; no GPU claimed", VISIBLE, os.environ[VISIBLE])
        return None
    if distribution in ALL_VISIBLE:
        log.info("devices: distribution %s uses every visible GPU; no GPU claimed", distribution)
        return None
    count = gpu_count()
    if count == 0 or count * per_gpu < 2:
        return None
    folder = lock_dir()
    waiting_since = None
    while (claim := try_claim(count, folder, per_gpu)) is None:
        if waiting_since is None:
            waiting_since = time.monotonic()
            taken = f"all {count} GPUs" if per_gpu == 1 else f"all {count * per_gpu} slots ({count} GPUs x {per_gpu})"
            log.warning("devices: %s are taken by other trainings (locks in %s); waiting for one to finish", taken,
                        folder)
        time.sleep(wait_seconds)
    _held = claim
    os.environ[VISIBLE] = str(claim.index)
    if per_gpu > 1:
        share_memory(per_gpu)
    waited = f" after waiting {time.monotonic() - waiting_since:.0f} s" if waiting_since is not None else ""
    slot = "" if per_gpu == 1 else f" (slot {claim.slot + 1} of {per_gpu}, {JAX_MEMORY}={os.environ[JAX_MEMORY]})"
    log.info("devices: GPU %d of %d claimed%s%s (%s=%d, lock %s)", claim.index, count, slot, waited, VISIBLE,
             claim.index, claim.path)
    return claim.index
