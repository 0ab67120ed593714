"""Finds confirmed detector hits in one string, scanning it as few times as possible.

Detectors with an ``anchor`` share one compiled regex whose first op is a character class, so the
regex engine skips non-anchor characters in C; the rest run only when their literal or keyword gate
is present. Candidates are confirmed by validators; context windows are checked last.

When the ``hyperscan`` package is importable (``BACKEND == "hyperscan"``), one native multi-pattern
pass first finds where any detector could match (``candidates.py``); the Python regexes then run only
there, with the same confirmation logic, so results are identical to the pure-Python scanner
(``BACKEND == "python"``, also forced with ``BASTION_MASKING_SCANNER=python``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from typing import Final, Literal

from bastion.masking import candidates
from bastion.masking.model import Detector, Hit
from bastion.masking.strategy import is_mask_token, token_spans

_VALUE_GROUP: Final = "(?P<value>"
_KEYWORD_HEAD: Final = 3
_ACCEL_MIN_LEN: Final = 256  # below this, a native scan costs more than the Python gates it saves

BACKEND: Final[Literal["hyperscan", "python"]] = (
    "hyperscan" if candidates.AVAILABLE and os.environ.get("BASTION_MASKING_SCANNER", "") != "python" else "python"
)
"""Candidate stage every ``Scanner`` uses unless told otherwise: chosen once, at import."""

log = logging.getLogger("bastion.masking")
_announced = False


def _announce() -> None:
    """Say once, at the first scanner built, which candidate stage is in use (never a silent switch)."""
    global _announced
    if _announced:
        return
    _announced = True
    if BACKEND == "hyperscan":
        log.info("masking scanner: hyperscan %s candidate stage", candidates.VERSION)
    elif candidates.AVAILABLE:
        log.info("masking scanner: pure Python (BASTION_MASKING_SCANNER=python)")
    else:
        log.warning("masking scanner: pure Python (hyperscan not importable; masking is several times slower)")


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

    __slots__ = ("_anchored", "_anchored_rx", "_cands", "_combined", "_gate", "_gated", "_ungated", "min_len")

    def __init__(self, detectors: Sequence[Detector], accelerate: bool | None = None) -> None:
        """``accelerate``: use the Hyperscan candidate stage (default: when ``BACKEND`` is hyperscan)."""
        self.min_len = min((d.min_len for d in detectors), default=1 << 30)
        self._anchored = tuple(d for d in detectors if d.anchor and not (d.finder or d.keywords or d.context))
        self._anchored_rx = tuple(re.compile(d.pattern) for d in self._anchored)
        self._combined = _combine(self._anchored)
        self._gated = tuple(
            (d, None if d.finder else re.compile(d.pattern)) for d in detectors if d not in self._anchored
        )
        self._cands: candidates.Candidates | None = None
        self._gate: re.Pattern[str] | None = None
        self._ungated: frozenset[int] = frozenset()
        if accelerate is None:
            _announce()
            accelerate = BACKEND == "hyperscan"
        if accelerate and detectors:
            self._accelerate()

    def _accelerate(self) -> None:
        """Compile the candidate database: anchored detectors as regions, the others as gates."""
        gates: list[tuple[int, str, int | None, bool]] = []
        for i, (det, _) in enumerate(self._gated):
            if det.finder is None:
                # Keyword detectors: the head of the pattern (the keyword, ≥ 3 chars) is a cheap gate.
                # A gate that alone decides whether the regex runs over the whole text (no keyword or
                # context words to check first) keeps its leading lookbehind: ``(?<![\w:.])`` is what
                # stops every ISO timestamp (``T10:37:00``) from opening the IPv6 gate.
                tight = not (det.keywords or det.context)
                gates.append((i, det.pattern, _KEYWORD_HEAD if det.keywords else None, tight))
            elif det.literals:
                gates.append((i, "|".join(re.escape(lit) for lit in det.literals), None, False))
        regions = tuple((i, d.pattern) for i, d in enumerate(self._anchored))
        self._cands = candidates.build(regions, tuple(gates))
        self._ungated = frozenset(i for i in range(len(self._gated)) if (True, i) not in self._cands.compiled)
        if all((False, i) in self._cands.compiled for i, _ in regions) and self._anchored:
            anchors = "".join(dict.fromkeys(d.anchor or "" for d in self._anchored))
            self._gate = re.compile(f"[{anchors}](?<!\\w[\\s\\S])")

    def scan(self, text: str, hint: str = "", relaxed: bool = False) -> list[Hit]:
        """Confirmed, non-overlapping hits in ``text``, sorted by position.

        ``hint`` is the lowercase JSON key the text sits under (it satisfies keyword and context
        checks). ``relaxed`` skips the context-window check: used for the whole-document prefilter,
        which must never miss what a per-string scan would find.
        """
        if len(text) < self.min_len:
            return []
        hits: list[Hit] = []
        found = self._candidates(text) if self._cands is not None and len(text) >= _ACCEL_MIN_LEN else None
        if found is None:
            if self._combined is not None:
                self._scan_anchored(text, hits)
            gates_seen: set[int] | None = None
        else:
            regions, gates_seen = found
            if self._combined is not None:
                if self._gate is None:
                    self._scan_anchored(text, hits)
                elif regions:
                    self._scan_regions(text, regions, hits)
        low: str | None = None
        for k, (det, rx) in enumerate(self._gated):
            if gates_seen is not None and k not in gates_seen and k not in self._ungated:
                continue  # its candidate pattern occurs nowhere: neither can its regex
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

    def _candidates(self, text: str) -> tuple[list[tuple[int, int]], set[int]] | None:
        """Merged candidate regions of anchored detectors, and the gated detectors seen (None: busy)."""
        assert self._cands is not None
        found = self._cands.scan(text)
        if found is None:
            return None
        spans, gates = found
        merged: list[tuple[int, int]] = []
        if spans:
            spans.sort(key=lambda s: s[1])
            start, end = spans[0][1], spans[0][2]
            for _, s, e in spans[1:]:
                if s > end:
                    merged.append((start, end))
                    start, end = s, e
                elif e > end:
                    end = e
            merged.append((start, end))
        return merged, gates

    def _scan_regions(self, text: str, regions: list[tuple[int, int]], hits: list[Hit]) -> None:
        """``_scan_anchored``, trying the combined regex only at anchor positions inside candidate regions.

        Every position where the combined regex can match lies in some region (see ``candidates``),
        and ``match`` at a position behaves as ``search`` finding it there: the hits are the same.
        """
        assert self._combined is not None and self._gate is not None
        match, gate = self._combined.match, self._gate.finditer
        pos = 0
        for a, b in regions:
            if b <= pos:
                continue
            for g in gate(text, max(a, pos), b):
                start = g.start()
                if start < pos or (m := match(text, start)) is None:
                    continue
                i = int(m.lastgroup[1:])  # type: ignore[index]
                hit, end = _confirm_match(self._anchored[i], m, f"a{i}", f"v{i}")
                j = i + 1
                while hit is None and j < len(self._anchored):
                    alone = self._anchored_rx[j].match(text, start)
                    if alone is not None:
                        hit, end = _confirm_match(self._anchored[j], alone, 0, "value")
                    j += 1
                if hit is not None:
                    hits.append(hit)
                    pos = max(end, start + 1)

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
