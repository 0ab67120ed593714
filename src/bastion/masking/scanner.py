"""Finds confirmed detector hits in one string, scanning it as few times as possible.

Detectors with an ``anchor`` share one compiled regex whose first op is a character class, so the
regex engine skips non-anchor characters in C; the rest run only when their literal or keyword gate
is present. Candidates are confirmed by validators; context windows are checked last.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from bastion.masking.model import Detector, Hit
from bastion.masking.strategy import is_mask_token, token_spans

_VALUE_GROUP: Final = "(?P<value>"


def _combine(detectors: Sequence[Detector]) -> re.Pattern[str] | None:
    """One regex trying every anchored detector at positions whose character is in some anchor.

    ``[anchors](?<=(?=ALTS)[\\s\\S])`` lets the C matcher skip to an anchor character, then steps back
    one character and tries the alternatives there; each alternative is a named group ``a<i>``.
    """
    if not detectors:
        return None
    anchors = "".join(dict.fromkeys(d.anchor or "" for d in detectors))
    alts = "|".join(f"(?P<a{i}>{d.pattern.replace(_VALUE_GROUP, f'(?P<v{i}>')})" for i, d in enumerate(detectors))
    # Anchored detectors start at a token boundary: reject mid-word anchors before trying any branch.
    return re.compile(f"[{anchors}](?<!\\w[\\s\\S])(?<=(?={alts})[\\s\\S])")


class Scanner:
    """Scans text for one fixed set of detectors; build once, reuse for every string."""

    __slots__ = ("_anchored", "_anchored_rx", "_combined", "_gated", "min_len")

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.min_len = min((d.min_len for d in detectors), default=1 << 30)
        self._anchored = tuple(d for d in detectors if d.anchor and not (d.finder or d.keywords or d.context))
        self._anchored_rx = tuple(re.compile(d.pattern) for d in self._anchored)
        self._combined = _combine(self._anchored)
        self._gated = tuple(
            (d, None if d.finder else re.compile(d.pattern)) for d in detectors if d not in self._anchored
        )

    def scan(self, text: str, hint: str = "", relaxed: bool = False) -> list[Hit]:
        """Confirmed, non-overlapping hits in ``text``, sorted by position.

        ``hint`` is the lowercase JSON key the text sits under (it satisfies keyword and context
        checks). ``relaxed`` skips the context-window check: used for the whole-document prefilter,
        which must never miss what a per-string scan would find.
        """
        if len(text) < self.min_len:
            return []
        hits: list[Hit] = []
        if self._combined is not None:
            self._scan_anchored(text, hits)
        low: str | None = None
        for det, rx in self._gated:
            if det.literals and not any(lit in text for lit in det.literals):
                continue
            if det.keywords or det.context:
                low = text.lower() if low is None else low
                if not any(w in low or w in hint for w in det.keywords or det.context):
                    continue
            if det.finder is not None:
                spans = det.finder(text)
            elif det.keywords and len(low) == len(text):  # type: ignore[arg-type]
                spans = _keyword_spans(rx, text, low, det.keywords)  # type: ignore[arg-type]
            else:
                spans = _spans(rx, text)  # type: ignore[arg-type]
            for start, end in spans:
                if not _confirmed(det, text[start:end]):
                    continue
                if det.context and not relaxed and not _in_context(det, low or text.lower(), hint, start, end):
                    continue
                hits.append(Hit(start, end, det))
        if hits and ("[" in text or "****" in text):
            hits = _outside_tokens(text, hits)
        return _disjoint(hits) if len(hits) > 1 else hits

    def _scan_anchored(self, text: str, hits: list[Hit]) -> None:
        """Walk the combined regex; on a failed candidate, try the later alternatives at that spot."""
        assert self._combined is not None  # only called when anchored detectors exist
        search = self._combined.search
        pos = 0
        while (m := search(text, pos)) is not None:
            i = int(m.lastgroup[1:])  # type: ignore[index]
            start = m.start()
            hit, end = _confirm_match(self._anchored[i], m, f"a{i}", f"v{i}")
            j = i + 1
            while hit is None and j < len(self._anchored):
                alone = self._anchored_rx[j].match(text, start)
                if alone is not None:
                    hit, end = _confirm_match(self._anchored[j], alone, 0, "value")
                j += 1
            if hit is None:
                pos = start + 1
                continue
            hits.append(hit)
            pos = max(end, start + 1)


def _spans(rx: re.Pattern[str], text: str) -> list[tuple[int, int]]:
    """Value spans (the ``value`` group when the pattern has one) of every match of ``rx``."""
    group = "value" if "value" in rx.groupindex else 0
    return [m.span(group) for m in rx.finditer(text)]


def _keyword_spans(rx: re.Pattern[str], text: str, low: str, keywords: tuple[str, ...]) -> list[tuple[int, int]]:
    """Value spans of matches of ``rx`` starting where a keyword occurs (found by substring search)."""
    group = "value" if "value" in rx.groupindex else 0
    spans: dict[int, tuple[int, int]] = {}
    for word in keywords:
        at = low.find(word)
        while at != -1:
            m = rx.match(text, at)
            if m is not None:
                spans.setdefault(m.start(), m.span(group))
            at = low.find(word, at + 1)
    return [spans[k] for k in sorted(spans)]


def _confirm_match(det: Detector, m: re.Match[str], whole: int | str, value: str) -> tuple[Hit | None, int]:
    """The hit for one regex match (or None) and where the match ended."""
    has_value = value in m.re.groupindex and m.start(value) != -1
    start, end = m.span(value) if has_value else m.span(whole)
    hit = Hit(start, end, det) if _confirmed(det, m.string[start:end]) else None
    return hit, m.end(whole)


def _confirmed(det: Detector, value: str) -> bool:
    """A candidate counts when it is not already a mask token and its validator accepts it."""
    return not is_mask_token(value) and (det.validator is None or det.validator(value))


def _in_context(det: Detector, low: str, hint: str, start: int, end: int) -> bool:
    """One of the detector's context words occurs in the key or within its window of the match."""
    window = low[max(0, start - det.window) : end + det.window]
    return any(w in hint or w in window for w in det.context)


def _outside_tokens(text: str, hits: list[Hit]) -> list[Hit]:
    """Hits that do not touch a mask token already in ``text`` (what keeps masking idempotent)."""
    tokens = token_spans(text)
    return [h for h in hits if all(h.end <= s or h.start >= e for s, e in tokens)]


def _disjoint(hits: list[Hit]) -> list[Hit]:
    """Drop hits overlapping an earlier (or, at the same start, longer) one."""
    hits.sort(key=lambda h: (h.start, -h.end))
    kept: list[Hit] = []
    last_end = -1
    for hit in hits:
        if hit.start >= last_end:
            kept.append(hit)
            last_end = hit.end
    return kept
