"""Credentials out of everything we print, log or record: ``user:password@`` in URLs, secrets in query strings.

Mirrors and proxies are often given with their credentials inside the address (``https://user:pw@host/``,
a presigned ``?X-Amz-Signature=...``); such an address must never reach stderr, a log, a report or MLflow.
"""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"

# The userinfo of an absolute URL: everything between "//" and the last "@" before the host's end.
_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^\s/?#@]*(?:@[^\s/?#@]*)*@", re.IGNORECASE)
# A query (or fragment) parameter whose name says it carries a secret: token, api_key, X-Amz-Signature, sig...
_SECRET_NAME = (r"[\w.-]*(?:token|key|secret|password|passwd|pwd|signature|credential|credentials)"
                r"|sig|auth|authorization|x-amz-security-token")
_QUERY_SECRET = re.compile(rf"(?P<name>[?&;#](?:{_SECRET_NAME})=)[^&;#\s'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with URL credentials (``user:password@``) and secret query values replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['name']}{MASK}", text)


def redact_data(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, strings) with every string redacted, keys included."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_data(k): redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_data(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """Installed on a handler: every record it writes (message, arguments, traceback) is redacted first."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class RedactingStream:
    """A text stream that redacts what is written to it: for libraries that print addresses (Keras' get_file)."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, encoding...: the wrapped stream's
        return getattr(self._stream, name)
