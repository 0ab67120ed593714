"""Escaping-by-default HTML building for the console: ``Markup`` is trusted markup, anything else is text.

Owns the one place where text becomes HTML. Every value put into a template through ``html()``
is escaped unless it is already ``Markup`` (built here from escaped parts), so an audit record's
attacker-controlled strings can only ever appear as text. Page layout is pages.py's.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from html import escape
from typing import Any

MAX_INLINE_JSON_CHARS = 400


class Markup(str):
    """A string that is already safe HTML; only this module and literal templates make one."""

    __slots__ = ()


def text(value: Any) -> Markup:
    """Return ``value`` as escaped HTML text (``None`` becomes an empty string; Markup passes)."""
    if isinstance(value, Markup):
        return value
    return Markup(escape("" if value is None else str(value), quote=True))


def html(template: str, *values: Any) -> Markup:
    """Fill the ``{}`` slots of a literal ``template`` with escaped ``values``.

    Preconditions: ``template`` is a literal from this package, never data.
    """
    return Markup(template.format(*(text(v) for v in values)))


def join(parts: Iterable[Markup], sep: str = "") -> Markup:
    """Concatenate markup fragments."""
    return Markup(sep.join(parts))


def render_json(value: Any, *, limit: int | None = None) -> Markup:
    """Return ``value`` as indented JSON text, escaped; ``limit`` truncates (for tables).

    ``ensure_ascii`` turns control, bidi and other non-ASCII characters into ``\\uXXXX`` escapes,
    so a record cannot reorder or hide what an operator reads.
    """
    dumped = json.dumps(value, indent=None if limit else 2, ensure_ascii=True, sort_keys=True, default=str)
    if limit is not None and len(dumped) > limit:
        dumped = dumped[:limit] + " …"
    return text(dumped)


def render_time(posix_s: float | None) -> Markup:
    """Return POSIX seconds as ``YYYY-MM-DD HH:MM:SS UTC`` inside a ``<time>`` element."""
    if posix_s is None:
        return Markup("")
    moment = datetime.datetime.fromtimestamp(posix_s, tz=datetime.UTC)
    return html('<time datetime="{}">{}</time>', moment.isoformat(timespec="seconds"),
                moment.strftime("%Y-%m-%d %H:%M:%S UTC"))
