"""``Masker``: masks any JSON value (and plain text) for one resolved set of profiles.

Two passes: a walk collects the strings to scan and applies field rules; one prefilter scan over all
collected strings (joined) finds which of them need a precise scan; then only the changed branches
are rebuilt. The input is never mutated. MCP message shapes are handled by ``mcp.py`` on top of this.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast

import orjson

from bastion.masking.errors import MaskingError
from bastion.masking.fields import FieldRule, PathState, Segment, initial_state, step_state
from bastion.masking.model import Detector, Finding, Hit, MaskOutcome, Strategy
from bastion.masking.scanner import Scanner
from bastion.masking.strategy import Renderer, is_mask_token

_DROP: Final = object()
_UNMASKABLE: Final = "[UNMASKABLE]"
_PREFILTER_MIN_SLOTS: Final = 4
_MAX_CACHED_KEYS: Final = 4096
_MIN_SCANNED_INT: Final = 10**6
_MIN_ROUNDS: Final = 4
_MAX_ROUNDS: Final = 64
_RESCAN_BUDGET_CHARS: Final = 8_000_000
"""Rescans of one string. Values glued together surface one per round (masking one gives the next
its boundary), so the rounds bound such a chain; a longer one fails closed like any masking
failure. Each round rescans the whole string on the event loop, so a long string gets fewer
rounds: as many as the budget allows, between the two bounds."""


class TextAnalyzer(Protocol):
    """An extra, slower engine (Presidio) consulted for every scanned string."""

    def analyze(self, text: str) -> list[Hit]:
        """Confirmed hits in ``text``."""
        ...


@dataclass(frozen=True, slots=True)
class MaskerOptions:
    """Behaviour switches shared by every masker an engine builds."""

    on_failure_block: bool = True
    blobs_block: bool = False
    max_depth: int = 64


@dataclass(frozen=True, slots=True)
class _Key:
    """Cached facts about one JSON key."""

    hint: str
    rule: FieldRule | None
    hits: list[Hit]
    context: bool


_ROOT_KEY: Final = _Key("", None, [], False)


@dataclass(slots=True)
class _Pass:
    """Per-call state: node ids are assigned in walk order, identically in both passes."""

    counter: int = 0
    slots: list[tuple[int, str, _Key]] = field(default_factory=list)
    actions: dict[int, Any] = field(default_factory=dict)
    key_actions: dict[int, str] = field(default_factory=dict)
    found: dict[int, list[str]] = field(default_factory=dict)
    blocked: dict[int, str] = field(default_factory=dict)
    block_where: tuple[str, str] | None = None
    findings: dict[tuple[str, str], int] = field(default_factory=dict)


class Masker:
    """Masks values for one fixed set of detectors, strategies and field rules; build once, reuse."""

    def __init__(
        self,
        detectors: tuple[Detector, ...],
        strategies: Mapping[str, Strategy],
        field_rules: tuple[FieldRule, ...],
        renderer: Renderer,
        options: MaskerOptions,
        extra: TextAnalyzer | None = None,
        extra_strategy: Strategy = Strategy.REDACT,
    ) -> None:
        self.detectors = detectors
        self.options = options
        self._scanner = Scanner(detectors)
        self._strategies = dict(strategies)
        self._rules = tuple(r for r in field_rules if r.names or r.patterns)
        self._path_rules = tuple(r for r in field_rules for _ in r.paths)
        self._paths = tuple(p for r in field_rules for p in r.paths)
        self._renderer = renderer
        self._extra = extra
        self._extra_strategy = extra_strategy
        self._key_cache: dict[str, _Key] = {}
        self._context_words = tuple({w for d in detectors for w in d.context})

    # -- public API ---------------------------------------------------------------------------

    def mask_json(self, value: Any, *, allow_drop: bool = True, path: str = "$") -> MaskOutcome:
        """Mask every string (and long integer) in ``value``; apply field rules by key and path.

        Returns the input object itself when nothing changed. ``path`` prefixes finding paths.

        Raises:
            MaskingError: a ``block`` strategy fired, or masking failed and ``on_failure`` is block.
        """
        return self._guard(lambda: self._mask_json(value, allow_drop, path), path)

    def mask_text(self, text: str, *, path: str = "$", parse_json: bool = True) -> MaskOutcome:
        """Mask a text; text that parses as a JSON object or array is masked structurally.

        Raises:
            MaskingError: as for ``mask_json``.
        """
        stripped = text.lstrip()[:1]
        if parse_json and stripped in ("{", "["):
            try:
                parsed = orjson.loads(text)
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, (dict, list)):
                inner = self.mask_json(parsed, path=path + "#$")
                if not inner.changed:
                    return MaskOutcome(text)
                return MaskOutcome(orjson.dumps(inner.value).decode(), inner.findings)
        return self.mask_json(text, allow_drop=False, path=path)

    # -- the two passes -----------------------------------------------------------------------

    def _guard(self, run: Any, path: str) -> MaskOutcome:
        """Turn unexpected failures into MaskingError, or a withheld value under best_effort."""
        try:
            result: MaskOutcome = run()
            return result
        except MaskingError:
            raise
        except Exception as exc:  # fail closed: nothing unmasked may leave because of a bug here
            if self.options.on_failure_block:
                raise MaskingError(data={"reason": type(exc).__name__, "path": path}) from exc
            return MaskOutcome(_UNMASKABLE, (Finding("masking_failed", path, 1),))

    def _mask_json(self, value: Any, allow_drop: bool, path: str) -> MaskOutcome:
        ctx = _Pass()
        self._collect(value, ctx, 0, _ROOT_KEY, initial_state(self._paths) if self._paths else frozenset())
        self._scan_slots(ctx, allow_drop)
        if not ctx.actions and not ctx.key_actions:
            return MaskOutcome(value)
        ctx.counter = 0
        segments: list[Segment] = []
        new_value = self._rebuild(value, ctx, segments, path)
        if ctx.block_where is not None:
            detector, where = ctx.block_where
            raise MaskingError(f"{detector} at {where} requires blocking", data={"detector": detector, "path": where})
        if new_value is _DROP:
            new_value = None
        findings = tuple(Finding(det, p, n) for (det, p), n in ctx.findings.items())
        return MaskOutcome(new_value, findings)

    def _collect(self, value: Any, ctx: _Pass, depth: int, key: _Key, state: PathState) -> None:
        """Pass 1: number nodes, queue strings for scanning, apply field rules (no descent below)."""
        nid = ctx.counter
        ctx.counter += 1
        kind = type(value)
        if kind is str:
            if len(value) >= self._scanner.min_len:
                ctx.slots.append((nid, value, key))
            return
        if kind is int and abs(value) >= _MIN_SCANNED_INT:
            ctx.slots.append((nid, str(value), key))
            return
        if kind is not dict and kind is not list:
            return
        if depth >= self.options.max_depth:
            if self.options.on_failure_block:
                raise MaskingError(data={"reason": "max_depth"})
            ctx.actions[nid] = _UNMASKABLE
            ctx.found[nid] = ["masking_failed"]
            return
        child_key = key
        items = value.items() if kind is dict else enumerate(value)
        for name, child in items:
            child_state, done = step_state(self._paths, state, name) if state else (state, -1)
            rule = self._path_rules[done] if done >= 0 else None
            if kind is dict:
                key_name = cast(str, name)  # JSON object keys are strings
                child_key = self._key_cache.get(key_name) or self._key(key_name)
                rule = rule or child_key.rule
                if child_key.hits:
                    self._apply_hits(ctx, ctx.counter, key_name, child_key.hits, "", False, True)
            if rule is not None and child is not None and child != "" and not _is_token(child):
                self._apply_rule(rule, ctx, ctx.counter)
                ctx.counter += 1
                continue
            self._collect(child, ctx, depth + 1, child_key, child_state)

    def _key(self, name: str) -> _Key:
        """What a key implies (cached, since keys repeat): its field rule, its own hits, its hint."""
        hint = name.lower()
        info = _Key(
            hint,
            next((r for r in self._rules if r.matches_key(name)), None),
            self._scanner.scan(name),
            any(w in hint for w in self._context_words),
        )
        if len(self._key_cache) < _MAX_CACHED_KEYS:
            self._key_cache[name] = info
        return info

    def _apply_rule(self, rule: FieldRule, ctx: _Pass, nid: int) -> None:
        """Record the field rule's action on node ``nid`` (the value is replaced whole)."""
        strategy = self._strategies.get(rule.name, rule.strategy)
        ctx.found[nid] = [rule.name]
        if strategy is Strategy.BLOCK:
            ctx.blocked[nid] = rule.name
            ctx.actions[nid] = f"[{rule.label}]"
        elif strategy is Strategy.DROP:
            ctx.actions[nid] = _DROP
        else:
            # The rule masks the whole value; structured values are rendered from their JSON text.
            ctx.actions[nid] = _RenderLater(strategy, rule.label)

    def _scan_slots(self, ctx: _Pass, allow_drop: bool) -> None:
        """Pass 1b: find which queued strings hold hits, then mask those precisely."""
        slots = ctx.slots
        if not slots:
            return
        todo: set[int] | range
        if len(slots) >= _PREFILTER_MIN_SLOTS and self._extra is None:
            todo = self._prefilter(slots)
        else:
            todo = range(len(slots))
        for i in sorted(todo):
            nid, text, key = slots[i]
            hits = self._scanner.scan(text, key.hint)
            if self._extra is not None:
                hits = _merge(hits, self._extra.analyze(text))
            if hits:
                self._apply_hits(ctx, nid, text, hits, key.hint, allow_drop and nid != 0, False)

    def _prefilter(self, slots: list[tuple[int, str, _Key]]) -> set[int]:
        """Indices of slots touched by a hit when all slots are scanned as one NUL-joined text.

        Slots under a key holding a context word are always rescanned: the joined text has no keys.
        """
        starts: list[int] = []
        todo: set[int] = set()
        offset = 0
        for i, (_, text, key) in enumerate(slots):
            starts.append(offset)
            offset += len(text) + 1
            if key.context:
                todo.add(i)
        doc = "\x00".join([text for _, text, _ in slots])
        for hit in self._scanner.scan(doc, relaxed=True):
            first = bisect.bisect_right(starts, hit.start) - 1
            last = bisect.bisect_right(starts, max(hit.start, hit.end - 1)) - 1
            todo.update(range(first, last + 1))
        return todo

    def _apply_hits(
        self, ctx: _Pass, nid: int, text: str, hits: list[Hit], hint: str, can_drop: bool, is_key: bool
    ) -> None:
        """Replace each hit by its strategy's rendering until a rescan finds nothing; record drop/block.

        A token can open a boundary that the original text did not have (``…com+44…`` becomes
        ``[EMAIL]+44…``), so the masked text is rescanned: this is what makes masking idempotent.
        """
        names = ctx.found.setdefault(nid, [])
        rounds = max(_MIN_ROUNDS, min(_MAX_ROUNDS, _RESCAN_BUDGET_CHARS // max(len(text), 1)))
        for _ in range(rounds):
            pieces: list[str] = []
            last = 0
            for hit in hits:
                name = hit.detector.name
                strategy = self._strategies.get(name, self._extra_strategy)
                names.append(name)
                if strategy is Strategy.BLOCK:
                    ctx.blocked.setdefault(nid, name)
                if strategy is Strategy.DROP and can_drop:
                    ctx.actions[nid] = _DROP
                pieces.append(text[last : hit.start])
                pieces.append(self._renderer.render(strategy, hit.detector.label, text[hit.start : hit.end]))
                last = hit.end
            pieces.append(text[last:])
            text = "".join(pieces)
            hits = self._scanner.scan(text, hint)
            if not hits:
                break
        else:
            raise RuntimeError("masking did not converge")  # turned into MaskingError by _guard
        if is_key:
            ctx.key_actions[nid] = text
        elif ctx.actions.get(nid) is not _DROP:
            ctx.actions[nid] = text

    def _rebuild(self, value: Any, ctx: _Pass, segments: list[Segment], prefix: str) -> Any:
        """Pass 2: copy the value with actions applied, in the same node order as pass 1."""
        nid = ctx.counter
        ctx.counter += 1
        names = ctx.found.get(nid)
        if names:
            where = render_path(prefix, segments)
            for name in names:
                ctx.findings[(name, where)] = ctx.findings.get((name, where), 0) + 1
            if nid in ctx.blocked and ctx.block_where is None:
                ctx.block_where = (ctx.blocked[nid], where)
        action = ctx.actions.get(nid, value)
        if isinstance(action, _RenderLater):
            return self._renderer.render(action.strategy, action.label, _canonical(value))
        if action is not value:
            return action
        if type(value) is dict:
            out: dict[str, Any] = {}
            for key, child in value.items():
                kid = ctx.counter
                segments.append(key)
                new = self._rebuild(child, ctx, segments, prefix)
                segments.pop()
                if new is not _DROP:
                    out[_unique(out, ctx.key_actions.get(kid) or key)] = new
            return out
        if type(value) is list:
            items: list[Any] = []
            for index, child in enumerate(value):
                segments.append(index)
                new = self._rebuild(child, ctx, segments, prefix)
                segments.pop()
                if new is not _DROP:
                    items.append(new)
            return items
        return value


@dataclass(frozen=True, slots=True)
class _RenderLater:
    """A field rule's replacement, rendered in pass 2 from the value's canonical text."""

    strategy: Strategy
    label: str


def _canonical(value: Any) -> str:
    """Text a field rule hashes or shortens: strings as-is, anything else as compact JSON."""
    # stdlib json: orjson refuses integers beyond 64 bits, which JSON (and upstreams) allow.
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _is_token(value: Any) -> bool:
    return isinstance(value, str) and is_mask_token(value)


def _unique(out: dict[str, Any], key: str) -> str:
    """A key not yet in ``out``: masked keys may collide (two e-mails both become ``[EMAIL]``)."""
    n = 2
    candidate = key
    while candidate in out:
        candidate = f"{key}~{n}"
        n += 1
    return candidate


def _merge(hits: list[Hit], extra: list[Hit]) -> list[Hit]:
    """Built-in hits plus extra-engine hits that do not overlap any built-in hit."""
    merged = list(hits)
    for e in extra:
        if all(e.end <= h.start or e.start >= h.end for h in hits):
            merged.append(e)
    merged.sort(key=lambda h: h.start)
    return merged


def render_path(prefix: str, segments: list[Segment]) -> str:
    """``$.users[0].email`` style path; keys that are not identifiers use ``['...']``."""
    out = [prefix]
    for seg in segments:
        if isinstance(seg, int):
            out.append(f"[{seg}]")
        elif seg.isidentifier():
            out.append("." + seg)
        else:
            out.append("['" + seg.replace("\\", "\\\\").replace("'", "\\'") + "']")
    return "".join(out)
