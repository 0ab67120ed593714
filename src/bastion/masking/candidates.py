"""Hyperscan candidate stage: one native multi-pattern pass proposes where Python regexes must look.

Every detector pattern is translated (from the ``re`` parse tree) into a *superset* pattern that
Hyperscan can compile: a leading one-character negative lookbehind ``(?<!C)`` becomes the consumed
``(?:^|[^C])`` (the match then starts one character earlier), other lookbehinds, negative lookaheads
and ``\\b``-style assertions are dropped, a leading top-level lookahead replaces the rest of the
pattern (whatever matches ``A(?=L)B`` at ``p`` also matches ``AL`` at ``p``), long bounded repeats are
opened up, and every construct that Python could match against a non-ASCII character (``\\d``,
``\\w``, ``\\s``, negated classes, ``.``) also accepts the bytes 0x80–0xFF; an ASCII letter under
``(?i)`` accepts only the bytes of the few non-ASCII characters ``re`` folds to it (``_folds``). The
text is scanned as one byte per character (non-ASCII characters become 0xFF), so Hyperscan offsets
are ``str`` offsets.

Hence: if the Python regex of a detector matches text starting at ``p``, its Hyperscan pattern
reports a match whose (leftmost) start is ``<= p`` and whose end is ``> p``. The scanner uses that
in two ways, and keeps every confirmation (Python ``match``, validators, context) unchanged:

* *regions*: anchored detectors are tried only at positions inside a reported span (from the
  pattern's maximum width before the end offset, or ``HS_FLAG_SOM_LEFTMOST`` when unbounded);
  outside them, no anchored regex can match;
* *gates* (``HS_FLAG_SINGLEMATCH``): other detectors run (exactly as in the pure-Python scanner)
  only when their pattern, or for finder detectors their literal, was seen at all.

A pattern the translator cannot handle (backreferences, conditionals, anything unknown) or that
Hyperscan refuses leaves its detector without a candidate pattern: it is then always run, so the
results never depend on the backend.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import importlib
import re
import string
from collections.abc import Iterable, Sequence
from typing import Any, Final

_hs: Any
try:  # the native engine is a runtime dependency, but the pure-Python scanner stays the fallback
    _hs = importlib.import_module("hyperscan")
except ImportError:  # pragma: no cover - exercised only where the wheel is unavailable
    _hs = None

AVAILABLE: Final = _hs is not None
"""True when the ``hyperscan`` package imported: scanners then use the native candidate stage."""

VERSION: Final = str(getattr(_hs, "__version__", "")) if _hs is not None else ""

_parser: Any = importlib.import_module("re._parser")
_const: Any = importlib.import_module("re._constants")

_HIGH: Final = frozenset(range(0x80, 0x100))
_ALL: Final = frozenset(range(0x100))
_MAX_WIDTH: Final = 1024  # region patterns at most this wide report end offsets only (no SOM: faster)
_MAX_BOUND: Final = 64  # repeats bounded above this are opened up ({m,n} -> {m,}): cheaper to compile
_ERRORS: Final = "bastion-hs-high"


def _high(error: UnicodeError) -> tuple[str, int]:
    """Encoding error handler: every character outside Latin-1 becomes the single byte 0xFF."""
    assert isinstance(error, UnicodeEncodeError)
    return "\xff" * (error.end - error.start), error.end


codecs.register_error(_ERRORS, _high)


def to_bytes(text: str) -> bytes:
    """One byte per character: ASCII as itself, anything else a byte in 0x80–0xFF."""
    return text.encode("ascii") if text.isascii() else text.encode("latin-1", _ERRORS)


class Unsupported(ValueError):
    """The pattern has a construct with no superset translation here (backreference, ...)."""


_CATEGORIES: Final = {
    "CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S", "CATEGORY_WORD": r"\w", "CATEGORY_NOT_WORD": r"\W",
}


def _char_class(items: Sequence[tuple[Any, Any]], icase: bool) -> frozenset[int]:
    """Bytes a class (or single literal) may match: ASCII by asking ``re`` itself, 0x80–0xFF conservatively."""
    parts: list[str] = []
    high = False
    for op, arg in items:
        name = str(op)
        if name == "NEGATE":
            parts.insert(0, "^")
            high = True
        elif name == "LITERAL":
            parts.append(f"\\U{arg:08x}")
            high = high or arg >= 0x80
        elif name == "RANGE":
            parts.append(f"\\U{arg[0]:08x}-\\U{arg[1]:08x}")
            high = high or arg[1] >= 0x80
        elif name == "CATEGORY" and str(arg) in _CATEGORIES:
            parts.append(_CATEGORIES[str(arg)])
            high = True
        else:
            raise Unsupported(name)
    rx = re.compile("[" + "".join(parts) + "]", re.IGNORECASE if icase else 0)
    ascii_ = frozenset(b for b in range(0x80) if rx.fullmatch(chr(b)))
    if high:
        return ascii_ | _HIGH
    if icase:  # an ASCII-only class matches a non-ASCII character only through case folding
        return ascii_ | frozenset(min(ord(c), 0xFF) for c in _folds() if rx.fullmatch(c))
    return ascii_


@functools.cache
def _folds() -> str:
    """Every non-ASCII character that ``(?i)`` matches against some ASCII letter (``İ ı ſ K``).

    Found by asking ``re`` over all code points (~0.1 s, once): an ASCII-only class under ``(?i)``
    can match nothing else outside ASCII, so its translation needs only these bytes, not 0x80–0xFF.
    """
    text = "".join(map(chr, range(0x80, 0xD800))) + "".join(map(chr, range(0xE000, 0x110000)))
    found: set[str] = set()
    letters = string.ascii_letters  # as ranges, as sets and as single literals: each compiles differently
    for rx in ("[A-Za-z]", "[a-z]", "[A-Z]", f"[{letters}]", f"[{letters[:26]}]", f"[{letters[26:]}]", "|".join(letters)):
        found.update(re.findall(rx, text, re.IGNORECASE))
    return "".join(sorted(found))


def _emit_class(members: frozenset[int]) -> str:
    if not members:
        raise Unsupported("empty class")
    if len(members) == 1:
        return f"\\x{next(iter(members)):02x}"
    out: list[str] = []
    run: list[int] = []
    for b in sorted(members):
        if run and b == run[-1] + 1:
            run.append(b)
            continue
        if run:
            out.append(f"\\x{run[0]:02x}-\\x{run[-1]:02x}" if len(run) > 1 else f"\\x{run[0]:02x}")
        run = [b]
    out.append(f"\\x{run[0]:02x}-\\x{run[-1]:02x}" if len(run) > 1 else f"\\x{run[0]:02x}")
    return "[" + "".join(out) + "]"


class _Budget:
    """Minimum width still to be covered before a truncated translation may stop (None: no limit)."""

    __slots__ = ("fresh", "left", "lookbehind", "state", "stopped")

    def __init__(self, limit: int | None, state: Any, lookbehind: bool = True) -> None:
        self.left = limit
        self.state = state
        self.stopped = False
        self.lookbehind = lookbehind
        self.fresh = True  # nothing translated yet: a leading lookbehind may still become a consumed character


def _seq(items: Iterable[tuple[Any, Any]], icase: bool, top: _Budget | None) -> str:
    """Translate one parsed sequence.

    ``top`` is set while translating the top-level sequence (groups at top level are flattened into
    it): there the translation may stop early, since any prefix of a pattern matches wherever the
    whole pattern does. A lookahead stops it too: its content replaces the rest of the pattern.
    """
    out: list[str] = []
    for op, arg in items:
        if top is not None and (top.stopped or top.left == 0):
            top.stopped = True
            break
        name = str(op)
        if top is not None and top.fresh and name not in ("SUBPATTERN", "ATOMIC_GROUP"):
            top.fresh = False
            if name == "ASSERT_NOT" and top.lookbehind and (before := _before(arg, icase)) is not None:
                out.append(before)
                continue
        if top is not None and top.left is not None and name not in ("SUBPATTERN", "ATOMIC_GROUP"):
            top.left = max(0, top.left - _parser.SubPattern(top.state, [(op, arg)]).getwidth()[0])
        if name == "LITERAL":
            out.append(_emit_class(_char_class([(op, arg)], icase)))
        elif name == "NOT_LITERAL":
            out.append(_emit_class(_char_class([(_const.NEGATE, None), (_const.LITERAL, arg)], icase)))
        elif name == "IN":
            out.append(_emit_class(_char_class(arg, icase)))
        elif name == "ANY":
            out.append(_emit_class(_ALL))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            lo, hi, sub = arg
            body = _seq(sub, icase, None)
            if not body:
                continue
            bound = "" if hi is _const.MAXREPEAT or hi > _MAX_BOUND else str(hi)
            out.append(f"(?:{body}){{{lo},{bound}}}" if bound != str(lo) else f"(?:{body}){{{lo}}}")
        elif name == "SUBPATTERN":
            _group, add, drop, sub = arg
            inner = (icase or bool(add & re.IGNORECASE)) and not drop & re.IGNORECASE
            out.append(f"(?:{_seq(sub, inner, top)})")
            continue  # flattened: its items were counted one by one
        elif name == "ATOMIC_GROUP":
            out.append(f"(?:{_seq(arg, icase, top)})")
            continue
        elif name == "BRANCH":
            out.append("(?:" + "|".join(_seq(s, icase, None) for s in arg[1]) + ")")
        elif name == "ASSERT" and top is not None and arg[0] == 1:
            out.append(_seq(arg[1], icase, None))
            top.stopped = True  # A(?=L)B matching at p implies AL matches at p
            break
        elif name in ("AT", "ASSERT", "ASSERT_NOT"):
            continue  # dropping an assertion only widens the language
        else:
            raise Unsupported(name)
    return "".join(out)


def _before(arg: tuple[int, Any], icase: bool) -> str | None:
    """A leading one-character negative lookbehind ``(?<!C)`` as the consumed ``(?:^|[^C])``, else None.

    Where the pattern matches at ``p``, the character at ``p - 1`` (if any) is not in ``C``, so the
    translation matches from ``p - 1`` (or from the very start): the reported start stays ``<= p``.
    The complement keeps every byte 0x80–0xFF, since a non-ASCII character may fall outside ``C``.
    """
    direction, sub = arg
    if direction != -1 or len(sub) != 1 or str(sub[0][0]) not in ("LITERAL", "NOT_LITERAL", "IN"):
        return None
    op, value = sub[0]
    if str(op) == "LITERAL":
        items = [(op, value)]
    elif str(op) == "NOT_LITERAL":
        items = [(_const.NEGATE, None), (_const.LITERAL, value)]
    else:
        items = list(value)
    outside = (_ALL - _char_class(items, icase)) | _HIGH
    return f"(?:^|{_emit_class(frozenset(outside))})"


def translate(pattern: str, limit: int | None = None, lookbehind: bool = True) -> str:
    """A Hyperscan pattern (over one byte per character) matching wherever ``pattern`` could start.

    ``limit`` keeps only the first top-level items (groups flattened) that together match at least
    ``limit`` characters: a cheaper gate for patterns with a distinctive head (``password\\s*=``).
    ``lookbehind``: translate a leading one-character negative lookbehind (``(?<![\\w.])``) into a
    consumed character instead of dropping it. That keeps tokens such as ``T10:37:`` or ``SKU-0393``
    from being candidates, but a broad leading class makes a pattern slower to scan for.

    Raises:
        Unsupported: the pattern uses a construct without a safe superset here.
    """
    parsed = _parser.parse(pattern, 0)
    budget = _Budget(limit, parsed.state, lookbehind)
    return _seq(parsed.data, bool(parsed.state.flags & re.IGNORECASE), budget)


class Candidates:
    """One compiled Hyperscan database: region patterns (SOM) and gate patterns (single match).

    ``regions`` and ``gates`` map caller keys to patterns; a key whose pattern cannot be translated
    or compiled is left out of ``compiled`` and must be treated as always present by the caller.
    """

    __slots__ = ("_db", "_gate_ids", "_keys", "_widths", "compiled")

    def __init__(self, regions: dict[int, str], gates: dict[int, tuple[str, int | None, bool]]) -> None:
        assert _hs is not None
        todo: list[tuple[bytes, int, tuple[bool, int]]] = []
        widths: dict[int, int] = {}
        for key, pattern in regions.items():
            with _suppress():
                expr = translate(pattern)
                width = _parser.parse(expr, 0).getwidth()[1]
                if width < _MAX_WIDTH:  # bounded: a match ending at e started at or after e - width
                    widths[key] = width
                flag = 0 if key in widths else _hs.HS_FLAG_SOM_LEFTMOST
                todo.append((expr.encode("ascii"), flag, (False, key)))
        for key, (pattern, limit, lookbehind) in gates.items():
            with _suppress():
                expr = translate(pattern, limit, lookbehind)
                todo.append((expr.encode("ascii"), _hs.HS_FLAG_SINGLEMATCH, (True, key)))
        try:
            db = _compile([e for e, _, _ in todo], [f for _, f, _ in todo]) if todo else None
        except _hs.error:  # find the refused ones: they must not sink the rest
            todo = [t for t in todo if _compiles(t[0], t[1])]
            db = _compile([e for e, _, _ in todo], [f for _, f, _ in todo]) if todo else None
        keys = [k for _, _, k in todo]
        self._db = db
        self._keys = tuple(keys)
        self._widths = tuple(widths.get(k, 0) if not g else 0 for g, k in keys)
        self._gate_ids = frozenset(i for i, (is_gate, _) in enumerate(keys) if is_gate)
        self.compiled: frozenset[tuple[bool, int]] = frozenset(keys)

    def scan(self, text: str) -> tuple[list[tuple[int, int, int]], set[int]] | None:
        """Region matches ``(key, start, end)`` and the keys of gates seen; None if busy (another thread)."""
        regions: list[tuple[int, int, int]] = []
        gates: set[int] = set()
        if self._db is None:
            return regions, gates
        keys, gate_ids, widths = self._keys, self._gate_ids, self._widths

        def on_match(i: int, start: int, end: int, _flags: int, _ctx: object) -> None:
            if i in gate_ids:
                gates.add(keys[i][1])
            else:  # without SOM, ``start`` is 0: the pattern's maximum width bounds the start instead
                regions.append((keys[i][1], max(start, end - widths[i]) if widths[i] else start, end))

        try:
            self._db.scan(to_bytes(text), match_event_handler=on_match)
        except _hs.ScratchInUseError:
            return None
        return regions, gates


class _suppress(contextlib.AbstractContextManager[None]):
    """Swallow translation failures: the detector is then simply left without a candidate pattern."""

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, (Unsupported, re.error, UnicodeError))


def _compiles(expr: bytes, flag: int) -> bool:
    assert _hs is not None
    try:
        _compile([expr], [flag])
    except _hs.error:
        return False
    return True


@functools.lru_cache(maxsize=64)
def build(
    regions: tuple[tuple[int, str], ...], gates: tuple[tuple[int, str, int | None, bool], ...]
) -> Candidates:
    """A shared ``Candidates`` for these patterns: compiling costs ~0.3 s, and maskers repeat detector sets.

    Each gate is ``(key, pattern, limit, lookbehind)``, as for ``translate``.
    """
    return Candidates(dict(regions), {k: (p, limit, lookbehind) for k, p, limit, lookbehind in gates})


def _compile(exprs: list[bytes], flags: list[int]) -> Any:
    assert _hs is not None
    db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
    db.compile(expressions=exprs, ids=list(range(len(exprs))), elements=len(exprs), flags=flags)
    return db
