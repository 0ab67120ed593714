"""Compiled match conditions and the three-valued truth they return.

Each condition tests one facet of a ``PolicyRequest`` and answers TRUE, FALSE or UNKNOWN
(the engine cannot tell: untrusted annotations, an argument of the wrong type). Conditions that
depend on the call itself (arguments, time, CEL) set ``per_call`` so list filtering can skip them.
Argument regexes use RE2 (linear time on caller-controlled input); globs are translated to ``re``.
"""

from __future__ import annotations

import enum
import math
import operator
import re
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final, Protocol

from bastion.policy.model import Kind, PolicyRequest
from bastion.policy.settings import DAYS, ArgCondition, TimeWindow


class Searcher(Protocol):
    """A compiled regex as far as conditions need it (``re2._Regexp``)."""

    def search(self, text: str) -> object | None:
        """The first match in ``text``, or None."""
        ...


class Truth(enum.Enum):
    """Kleene truth: a condition holds, does not hold, or cannot be decided from what is known."""

    FALSE = 0
    TRUE = 1
    UNKNOWN = 2


ABSENT: Final = object()
"""Sentinel for an argument path that leads nowhere."""
_MISMATCH: Final = object()
"""Sentinel for a path that runs into a value of the wrong shape (e.g. indexing a string)."""

MCP_ANNOTATION_DEFAULTS: Final[Mapping[str, bool]] = {
    "readOnlyHint": False,
    "idempotentHint": False,
    "openWorldHint": True,
}
"""ToolAnnotations defaults, MCP 2025-06-18 schema; destructiveHint defaults to ``not readOnlyHint``."""


def effective_annotations(annotations: Mapping[str, Any]) -> dict[str, Any]:
    """Fill in the MCP defaults for hints a tool did not declare."""
    effective = {**MCP_ANNOTATION_DEFAULTS, **annotations}
    effective.setdefault("destructiveHint", effective["readOnlyHint"] is not True)
    return effective


def compile_globs(patterns: Sequence[str]) -> re.Pattern[str]:
    """One anchored regex for any-of ``patterns``; ``*`` is any run, ``?`` any one character."""
    parts = []
    for pattern in patterns:
        collapsed = re.sub(r"\*+", "*", pattern)
        parts.append("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in collapsed))
    return re.compile("(?:" + "|".join(parts) + r")\Z", re.DOTALL)


def is_glob(pattern: str) -> bool:
    """True when ``pattern`` has wildcards (and so cannot be indexed as an exact name)."""
    return "*" in pattern or "?" in pattern


def json_equal(a: Any, b: Any) -> bool:
    """Type-strict JSON equality: ``true`` is not ``1``, ``5`` is not ``"5"``, ``1`` equals ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(map(json_equal, a, b))
    return type(a) is type(b) and a == b


def resolve_path(args: Mapping[str, Any], path: Sequence[str]) -> Any:
    """Follow ``path`` into ``args``: mapping keys, or decimal indices into lists."""
    node: Any = args
    for segment in path:
        if isinstance(node, Mapping):
            if segment not in node:
                return ABSENT
            node = node[segment]
        elif isinstance(node, list) and segment.isdecimal():
            if int(segment) >= len(node):
                return ABSENT
            node = node[int(segment)]
        else:
            return _MISMATCH
    return node


def all_of(truths: Iterable[Truth]) -> Truth:
    """Kleene AND: FALSE wins, then UNKNOWN."""
    result = Truth.TRUE
    for truth in truths:
        if truth is Truth.FALSE:
            return Truth.FALSE
        if truth is Truth.UNKNOWN:
            result = Truth.UNKNOWN
    return result


def _from_bool(value: bool) -> Truth:
    return Truth.TRUE if value else Truth.FALSE


class Condition(Protocol):
    """A compiled condition: a label for ``explain`` and a three-valued ``test``."""

    label: str
    per_call: ClassVar[bool]
    """True when the outcome depends on the call (arguments, time, CEL), not only on who and what."""

    def test(self, request: PolicyRequest) -> Truth:
        """Evaluate against one request."""
        ...

    def observed(self, request: PolicyRequest) -> str:
        """What the request carried for this facet, for humans reading ``explain`` output."""
        ...


class SubjectCondition:
    """The caller's subject matches one of the globs."""

    __slots__ = ("_regex", "label")
    per_call: ClassVar[bool] = False

    def __init__(self, patterns: Sequence[str]) -> None:
        self.label = f"subject matches {list(patterns)}"
        self._regex = compile_globs(patterns)

    def test(self, request: PolicyRequest) -> Truth:
        return _from_bool(self._regex.match(request.subject) is not None)

    def observed(self, request: PolicyRequest) -> str:
        return repr(request.subject)


class GroupsCondition:
    """The caller is in at least one of the groups."""

    __slots__ = ("_groups", "label")
    per_call: ClassVar[bool] = False

    def __init__(self, groups: Sequence[str]) -> None:
        self.label = f"groups any of {list(groups)}"
        self._groups = frozenset(groups)

    def test(self, request: PolicyRequest) -> Truth:
        return _from_bool(not self._groups.isdisjoint(request.groups))

    def observed(self, request: PolicyRequest) -> str:
        return repr(sorted(request.groups))


class ServerCondition:
    """The target upstream's name matches one of the globs."""

    __slots__ = ("_regex", "label")
    per_call: ClassVar[bool] = False

    def __init__(self, patterns: Sequence[str]) -> None:
        self.label = f"server matches {list(patterns)}"
        self._regex = compile_globs(patterns)

    def test(self, request: PolicyRequest) -> Truth:
        return _from_bool(self._regex.match(request.server) is not None)

    def observed(self, request: PolicyRequest) -> str:
        return repr(request.server)


class TargetCondition:
    """The request is of ``kind`` and its name (tool, prompt, resource URI) matches one of the globs."""

    __slots__ = ("_kind", "_regex", "label")
    per_call: ClassVar[bool] = False

    def __init__(self, kind: Kind, patterns: Sequence[str]) -> None:
        self.label = f"{kind.value} matches {list(patterns)}"
        self._kind = kind
        self._regex = compile_globs(patterns)

    def test(self, request: PolicyRequest) -> Truth:
        return _from_bool(request.kind is self._kind and self._regex.match(request.name) is not None)

    def observed(self, request: PolicyRequest) -> str:
        return f"{request.kind.value} {request.name!r}"


class AnnotationCondition:
    """A tool annotation equals a value; UNKNOWN unless the upstream is trusted and the tool known."""

    __slots__ = ("_expected", "_key", "label")
    per_call: ClassVar[bool] = False

    def __init__(self, key: str, expected: Any) -> None:
        self.label = f"annotations.{key} == {expected!r}"
        self._key = key
        self._expected = expected

    def test(self, request: PolicyRequest) -> Truth:
        if request.kind is not Kind.TOOL:
            return Truth.FALSE
        if not request.upstream_trusted or request.annotations is None:
            return Truth.UNKNOWN
        actual = effective_annotations(request.annotations).get(self._key, ABSENT)
        return _from_bool(actual is not ABSENT and json_equal(actual, self._expected))

    def observed(self, request: PolicyRequest) -> str:
        if request.kind is not Kind.TOOL:
            return f"a {request.kind.value}, which has no annotations"
        if not request.upstream_trusted or request.annotations is None:
            return "annotations not trusted (upstream not marked trusted, or tool definition unknown)"
        return repr(effective_annotations(request.annotations).get(self._key, "<absent>"))


class ArgumentCondition:
    """Every operator given for one argument path holds."""

    __slots__ = ("_ops", "_path", "label")
    per_call: ClassVar[bool] = True

    def __init__(self, path: str, spec: ArgCondition, regex: Searcher | None) -> None:
        dumped = spec.model_dump(mode="json", by_alias=True)
        self.label = f"args.{path} " + " and ".join(f"{op} {value!r}" for op, value in dumped.items())
        self._path = tuple(path.split("."))
        ops: list[tuple[str, Any]] = [(op, value) for op, value in dumped.items() if op != "regex"]
        if regex is not None:
            ops.append(("regex", regex))
        self._ops = tuple(ops)

    def test(self, request: PolicyRequest) -> Truth:
        value = resolve_path(request.args, self._path)
        if value is _MISMATCH:
            return Truth.UNKNOWN
        return all_of(_apply(op, operand, value) for op, operand in self._ops)

    def observed(self, request: PolicyRequest) -> str:
        value = resolve_path(request.args, self._path)
        if value is ABSENT:
            return "absent"
        return "a path through a non-object value" if value is _MISMATCH else repr(value)


_COMPARISONS: Final[Mapping[str, Callable[[Any, Any], Any]]] = {
    "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
}


def _apply(op: str, operand: Any, value: Any) -> Truth:
    if op == "exists":
        return _from_bool((value is not ABSENT) == operand)
    if value is ABSENT:
        return Truth.FALSE
    if op == "eq":
        return _from_bool(json_equal(value, operand))
    if op == "in":
        return _from_bool(any(json_equal(value, item) for item in operand))
    if op == "regex":
        return _from_bool(operand.search(value) is not None) if isinstance(value, str) else Truth.UNKNOWN
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return Truth.UNKNOWN
    return _from_bool(bool(_COMPARISONS[op](value, operand)))


class TimeCondition:
    """The request's local time (in the window's zone) falls on one of the days and in one of the spans."""

    __slots__ = ("_days", "_spans", "_zone", "label")
    per_call: ClassVar[bool] = True

    def __init__(self, window: TimeWindow) -> None:
        self.label = f"time {','.join(window.days)} {','.join(window.hours)} {window.tz}"
        self._zone = zoneinfo.ZoneInfo(window.tz)
        self._days = frozenset(DAYS.index(day) for day in window.days)
        self._spans = tuple((_minutes(span[:5]), _minutes(span[6:])) for span in window.hours)

    def test(self, request: PolicyRequest) -> Truth:
        local = request.now.astimezone(self._zone)
        if local.weekday() not in self._days:
            return Truth.FALSE
        minute = local.hour * 60 + local.minute
        return _from_bool(any(
            start <= minute < end if start < end else (minute >= start or minute < end)
            for start, end in self._spans
        ))

    def observed(self, request: PolicyRequest) -> str:
        return request.now.astimezone(self._zone).strftime("%a %H:%M %Z")


def _minutes(hhmm: str) -> int:
    return int(hhmm[:2]) * 60 + int(hhmm[3:])
