"""How far long data work has got (rendering, downloading, decoding): done/total, rate and time left.

In a terminal it is a tqdm bar, redrawn in place. Piped (DVC's logs, CI, ``| tee``), a redrawn bar is a
run of carriage returns that shows as one line, and only once the work ends: a 9-minute rendering ran
silent. So when stderr is not a terminal, progress is a log line on this module's logger (timestamped and
formatted like the stage's other lines) every ``interval`` seconds, at an update, and one last line at
the end, also when the work stops on an error or Ctrl-C:

    12:03:10 INFO transferbench.core.progress: rendering 2,048/210,000 img (1%), 98.1 img/s, 34:20 left
    12:37:41 INFO transferbench.core.progress: rendering 210,000/210,000 img (100%), 101 img/s, done in 34:31

The interval is ``TRANSFERBENCH_PROGRESS_SECONDS`` (default 10). Rates count this run's work only: a
resumed run that starts at 60% says how fast it goes, not how much was there already.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable
from types import TracebackType

from tqdm import tqdm

log = logging.getLogger(__name__)

INTERVAL_ENV = "TRANSFERBENCH_PROGRESS_SECONDS"
DEFAULT_INTERVAL_S = 10.0


def interval_seconds() -> float:
    """Seconds between two piped lines: ``TRANSFERBENCH_PROGRESS_SECONDS`` if set, else 10."""
    value = os.environ.get(INTERVAL_ENV)
    if not value:
        return DEFAULT_INTERVAL_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:
        raise ValueError(f"{INTERVAL_ENV}={value!r} is not a number of seconds (0 or more)")
    return seconds


def in_terminal() -> bool:
    """Whether stderr, where progress goes, is a terminal that can redraw a line in place."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without a file, or closed
        return False


def amount(value: float, unit: str, rate: bool = False) -> str:
    """``value`` of ``unit`` for people: ``1,024 img``; bytes (``B``) in binary units, ``1.5 MiB``. A
    ``rate`` below 100 keeps a decimal: ``2.5 img``."""
    if unit != "B":
        return f"{value:,.1f} {unit}" if rate and abs(value) < 100 else f"{value:,.0f} {unit}"
    for prefix in ("", "Ki", "Mi", "Gi"):
        if abs(value) < 1024:
            return f"{value:.0f} B" if not prefix else f"{value:.1f} {prefix}B"
        value /= 1024
    return f"{value:.1f} TiB"


def duration(seconds: float) -> str:
    """``seconds`` as ``m:ss`` or ``h:mm:ss``."""
    return tqdm.format_interval(max(0.0, seconds))


class Progress:
    """Progress of ``total`` units of work (None: unknown, as for a download without a length).

    ``initial``: units already done when it starts (a resumed run). ``unit``: ``img``, or ``B`` for bytes.
    ``terminal``: a tqdm bar (default: when stderr is a terminal), else log lines every ``interval``
    seconds (default :func:`interval_seconds`). ``clock`` is for tests. ``leave``: a terminal bar stays
    on screen when done (a download's is cleared: the log line after it says what came of it).
    """

    def __init__(self, desc: str, total: int | None, *, initial: int = 0, unit: str = "img",
                 terminal: bool | None = None, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic, leave: bool = True):
        self.desc, self.total, self.unit = desc, total, unit
        self.initial = self.n = initial
        self.interval = interval_seconds() if interval is None else interval
        self.clock = clock
        self.started = self.last_line = clock()
        self.closed = False
        self.bar: tqdm | None = None
        if in_terminal() if terminal is None else terminal:
            byte_scale = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
            # mininterval: a redraw a second at most, plenty for the eye and cheap for a fast loop.
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, mininterval=1.0,
                            file=sys.stderr, leave=leave, dynamic_ncols=True, **byte_scale)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(stopped=kind is not None)

    def update(self, n: int = 1) -> None:
        """``n`` more units done; piped, a line once ``interval`` seconds have passed since the last."""
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = self.clock()
        if now - self.last_line >= self.interval:
            self.last_line = now
            log.info("%s", self.line(now))

    def rate(self, now: float) -> float | None:
        """Units per second done by this run so far; None before any time has passed."""
        elapsed = now - self.started
        return (self.n - self.initial) / elapsed if elapsed > 0 else None

    def line(self, now: float, end: str | None = None) -> str:
        """``<desc> <done>/<total> <unit> (<percent>), <rate>/s, <time left>``; ``end`` replaces the time left."""
        if self.total is None:
            done = amount(self.n, self.unit)
        else:
            percent = 100 * self.n / self.total if self.total else 100.0
            done = (f"{amount(self.n, 'B')}/{amount(self.total, 'B')}" if self.unit == "B"
                    else f"{self.n:,}/{self.total:,} {self.unit}") + f" ({percent:.0f}%)"
        rate = self.rate(now)
        text = f"{self.desc} {done}, " + (f"{amount(rate, self.unit, rate=True)}/s" if rate is not None
                                           else "rate unknown")
        if end is not None:
            return f"{text}, {end}"
        if self.total is None:
            return f"{text}, {duration(now - self.started)} so far"
        if rate:
            return f"{text}, {duration((self.total - self.n) / rate)} left"
        return f"{text}, time left unknown"

    def close(self, stopped: bool = False) -> None:
        """The last line (piped): ``done in <time>``, or ``stopped after <time>`` when the work did not end."""
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
            return
        now = self.clock()
        log.info("%s", self.line(now, f"{'stopped after' if stopped else 'done in'} {duration(now - self.started)}"))
