"""Worker processes for the stages that cut their work into chunks (CAPTCHA rendering, photo decoding)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import TypeVar

C = TypeVar("C")
R = TypeVar("R")


def cpu_count() -> int:
    """The cores this process may use (a container or `taskset` can allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def map_chunks(work: Callable[[C], R], chunks: Sequence[C], workers: int) -> Iterator[tuple[C, R]]:
    """Yield (chunk, work(chunk)) as chunks finish: in this process for one worker, else in a spawn pool.

    ``work`` must be a module-level function of a module light to import: each worker imports it.
    """
    if workers == 1:
        for chunk in chunks:
            yield chunk, work(chunk)
        return
    # spawn, not fork: the parent may have imported TensorFlow, whose threads do not survive a fork.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        pending = {pool.submit(work, chunk): chunk for chunk in chunks}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                yield pending.pop(future), future.result()
    finally:
        # On an error or Ctrl-C, drop the queued chunks instead of working through them all before exiting.
        pool.shutdown(wait=True, cancel_futures=True)
