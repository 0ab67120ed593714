"""Vocabulary of the masking package: strategies, detectors, hits, findings and outcomes.

Frozen, slotted dataclasses and enums only; the scanning, rendering and walking live elsewhere.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


class Strategy(enum.StrEnum):
    """What happens to a match; ordered from least to most strict in ``STRICTNESS``."""

    PARTIAL = "partial"
    HASH = "hash"
    REDACT = "redact"
    DROP = "drop"
    BLOCK = "block"


STRICTNESS: dict[Strategy, int] = {s: i for i, s in enumerate(Strategy)}
"""When two profiles disagree on a detector's strategy, the stricter one wins (fail closed)."""

Validator = Callable[[str], bool]
Finder = Callable[[str], Iterable[tuple[int, int]]]


@dataclass(frozen=True, slots=True)
class Detector:
    """One kind of sensitive value: a candidate pattern plus the checks that confirm it.

    ``pattern`` may hold one group named ``value``: only that part is masked. Gating fields let the
    scanner skip text cheaply: ``anchor`` (regex class of the first character, which must follow a
    non-word character; anchored detectors share one combined regex), ``literals`` (case-sensitive
    substrings, one must occur), ``keywords`` (lowercase words where a match starts: the regex is
    tried only at their occurrences). ``context`` words must occur within ``window`` characters of
    the match, or in the JSON key the text sits under.
    """

    name: str
    label: str
    category: str
    pattern: str = ""
    validator: Validator | None = None
    finder: Finder | None = None
    anchor: str | None = None
    literals: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    context: tuple[str, ...] = ()
    window: int = 48
    min_len: int = 6


@dataclass(frozen=True, slots=True)
class Hit:
    """A confirmed match: the half-open span to mask in the scanned text, and its detector."""

    start: int
    end: int
    detector: Detector


@dataclass(frozen=True, slots=True)
class Finding:
    """What was masked, where, how often: never the value itself."""

    detector: str
    path: str
    count: int


@dataclass(frozen=True, slots=True)
class MaskOutcome:
    """The masked value (the input object itself when nothing changed) and its findings."""

    value: Any
    findings: tuple[Finding, ...] = ()

    @property
    def changed(self) -> bool:
        """True when at least one value was masked, dropped or replaced."""
        return bool(self.findings)
