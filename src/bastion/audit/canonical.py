"""RFC 8785 (JSON Canonicalization Scheme) bytes for audit record bodies.

Owns encoding a JSON value to its one canonical byte string and checking that stored bytes are
already canonical; wraps the ``rfc8785`` package and translates its errors. What goes into a
record body is audit/record.py's business.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from bastion.errors import BastionError


class CanonicalEncodingError(BastionError):
    """Raised when a value has no RFC 8785 form or stored bytes are not the canonical form."""


def canonical_bytes(obj: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 JSON encoding of ``obj``.

    Preconditions: ``obj`` is built from dict (str keys), list/tuple, str, int, float, bool, None.

    Raises:
        CanonicalEncodingError: a non-string key, an unsupported type, an integer outside
            ±(2**53 - 1) (RFC 8785 §3.2.2.3 via I-JSON, RFC 7493 §2.2), NaN/±Infinity, or a lone
            surrogate (RFC 8785 §3.2.2.2 requires valid Unicode).
    """
    try:
        return rfc8785.dumps(obj)
    except rfc8785.CanonicalizationError as exc:
        raise CanonicalEncodingError(f"not encodable as RFC 8785 JSON: {exc}") from exc
    except RecursionError as exc:
        raise CanonicalEncodingError("not encodable as RFC 8785 JSON: nested too deeply") from exc


def parse_canonical(body: bytes) -> Any:
    """Parse ``body`` as JSON and return the value, requiring the bytes to be its RFC 8785 form.

    Re-encoding the parsed value and comparing bytes catches every non-canonical spelling at once:
    whitespace, key order, duplicate keys, escapes, number forms (``1.0``, ``1e2``).

    Raises:
        CanonicalEncodingError: the bytes are not UTF-8 JSON, or are JSON but not canonical.
    """
    try:
        value = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise CanonicalEncodingError(f"body is not UTF-8 JSON: {type(exc).__name__}") from exc
    if canonical_bytes(value) != body:
        raise CanonicalEncodingError("body is JSON but not its RFC 8785 canonical form")
    return value
