"""Errors a user can fix: the stage prints their one-line message, without a traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """A parameter is unknown, missing or out of range; the message names it and what is accepted."""
