"""Structured JSON log lines on stderr, and ``escape_json_text``, which keeps any JSON text on one line.

Owns the log line shape (one object per line) and the escaping that both these lines and the audit
sinks' copies (audit/sinks/format.py) rely on so that no logged value can forge or disguise a line.
Which events are logged, and at what level, is each module's business.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}

_ASCII_UNSAFE = tuple(map(chr, [*range(0x20), 0x7F]))
_UNSAFE = (*_ASCII_UNSAFE, *map(chr, range(0x80, 0xA0)), "\u061c", "\u200e", "\u200f", "\u2028", "\u2029",
           *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A)))
"""C0 and C1 controls and DEL (U+0085 is NEL), the Unicode line and paragraph separators, and the bidi
controls that reorder how a line reads (Trojan Source, CVE-2021-42574): a line-oriented reader may
split on the first kind, a human reader is misled by the last."""
_UNSAFE_PATTERN = re.compile("[" + "".join(_UNSAFE) + "]")


def escape_json_text(text: str) -> str:
    """Escape the characters in ``_UNSAFE`` as ``\\uXXXX``.

    Preconditions: ``text`` is compact serialised JSON (no whitespace between tokens), so these
    characters can only stand inside strings, where ``\\uXXXX`` decodes to the same character: the
    JSON value is unchanged while the text can no longer break or disguise a line.
    """
    # Substring tests run at memchr speed and a test for a character wider than the text's widest
    # is free, so most texts (none of these characters) are let through ~6x faster than a regex scan.
    if not any(char in text for char in (_ASCII_UNSAFE if text.isascii() else _UNSAFE)):
        return text
    return _UNSAFE_PATTERN.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON: time, level, logger, message, ``extra`` fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON object with no character that could end or reorder the line."""
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:
            text = orjson.dumps(entry, default=str).decode()
        except TypeError:
            # orjson refuses lone surrogates; the stdlib writes them (and all non-ASCII) as \\uXXXX,
            # rather than losing the line to logging's multi-line "Logging error" report.
            text = json.dumps(entry, default=str, separators=(",", ":"))
        return escape_json_text(text)


def configure_logging(level: str) -> None:
    """Send every log record to stderr as one JSON line, at ``level`` and above."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
