"""Errors a user can fix: a stage prints their message as one line and exits 1, without a traceback.

Anything else that escapes a stage is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad params or bad input; the message names the key or file, the bad value and what to do."""


class ConfigError(UserError, ValueError):
    """A parameter is unknown, missing or out of range; the message names it and what is accepted."""


class MissingInput(UserError, FileNotFoundError):
    """A file an earlier stage writes is not there; the message names it and the stage to run."""


class BadInput(UserError, ValueError):
    """An input file is truncated, corrupt or inconsistent; the message names it and what to rerun."""


class NoSpace(UserError):
    """A write failed for lack of disk space (or a file size limit); the message names the file and the sizes."""


class NotWritable(UserError):
    """An output folder cannot be created or written; the message names it and the reason."""



# A value in a message is shown whole up to LONG characters (a path, an address); a longer one (a pasted
# file, a runaway string) by its first SHOWN characters, which say which value it is, and its length.
LONG, SHOWN = 200, 60


def shortened(text: str, limit: int = LONG) -> str:
    """``text``, or when it is longer than ``limit`` its first SHOWN characters, ``…`` and its length."""
    return text if len(text) <= limit else f"{text[:min(SHOWN, limit)]}… ({len(text):,} characters)"


def quoted(value: object, limit: int = LONG) -> str:
    """``repr(value)`` for a message, shortened (see :func:`shortened`): one bad value of thousands of
    characters still leaves a readable line."""
    return shortened(repr(value), limit)
