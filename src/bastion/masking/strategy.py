"""Renders a masked value for each strategy and recognises Bastion's own mask tokens.

Tokens look like ``[EMAIL]``, ``[EMAIL:3f9a1c]`` or ``****1234``; detectors skip values that already
are tokens, which is what makes masking idempotent. ``drop`` and ``block`` are decided by the walker.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Final

from bastion.masking.model import Strategy

_TOKEN: Final = re.compile(r"\[[A-Z][A-Z0-9_]*(?::[0-9a-f]{6,64})?\]|\*{4}[^\s*]{0,4}")
_PARTIAL_MIN_CHARS: Final = 8


def is_mask_token(text: str) -> bool:
    """True when ``text`` is exactly a token this module renders (so it must not be masked again)."""
    return _TOKEN.fullmatch(text) is not None


def token_spans(text: str) -> list[tuple[int, int]]:
    """Spans of every mask token inside ``text``."""
    return [m.span() for m in _TOKEN.finditer(text)]


class Renderer:
    """Turns (strategy, label, value) into replacement text; holds the HMAC key for ``hash``."""

    __slots__ = ("_hash_chars", "_key")

    def __init__(self, hmac_key: bytes | None, hash_chars: int = 6) -> None:
        self._key = hmac_key
        self._hash_chars = hash_chars

    def render(self, strategy: Strategy, label: str, value: str) -> str:
        """Replacement for ``value``: ``[LABEL]``, ``****last4`` or ``[LABEL:hmac]``.

        ``drop`` and ``block`` render as ``[LABEL]``: the walker uses that where it cannot drop.
        A ``hash`` without a key cannot happen: ``MaskingEngine`` refuses such configuration.
        """
        if strategy is Strategy.PARTIAL and len(value) >= _PARTIAL_MIN_CHARS:
            return "****" + value[-4:]
        if strategy is Strategy.HASH and self._key is not None:
            digest = hmac.new(self._key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
            return f"[{label}:{digest[: self._hash_chars]}]"
        return f"[{label}]"
