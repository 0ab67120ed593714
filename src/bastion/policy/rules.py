"""Compile validated rule settings into executable rules and index them by target.

Owns the per-rule condition list (cheap facets first, CEL last), the translation of a rule's
contributions (action, approval, mask, rate limit) into model types, and ``RuleIndex``, which
narrows a request to the rules that can possibly match its server, kind and name.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import re2  # type: ignore[import-untyped]  # google-re2 ships no stubs

from bastion.policy.cel import CelCompileError, CelCondition
from bastion.policy.conditions import (
    AnnotationCondition,
    ArgumentCondition,
    Condition,
    GroupsCondition,
    ServerCondition,
    SubjectCondition,
    TargetCondition,
    TimeCondition,
    Truth,
    is_glob,
)
from bastion.policy.model import Action, ApprovalMode, ApprovalRequirement, Confirm, Kind, PolicyRequest, RateLimitKey
from bastion.policy.settings import PolicySettings, Problem, RuleSettings, describe_location

_TARGETS = (("tool", Kind.TOOL), ("resource", Kind.RESOURCE), ("prompt", Kind.PROMPT))
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_CACHE_MAX = 4096


class Probe(enum.Enum):
    """A rule's status when only who and what are known (list filtering), not the call."""

    NO = "no"
    YES = "yes"
    UNKNOWN = "unknown"
    """Some condition cannot be trusted (annotations) and none depends on the call."""
    DEPENDS = "depends"
    """Whether it matches depends only on the call (arguments, time, CEL)."""
    MIXED = "mixed"
    """It depends on the call and on facts that cannot be trusted."""


@dataclass(frozen=True, slots=True)
class RuleLimit:
    """A rule's rate limit as compiled: ``calls`` per ``per_s`` seconds, counted per ``key``."""

    calls: int
    per_s: float
    key: RateLimitKey


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One executable rule; ``index`` is its position in the file (tie-breaker between equals)."""

    index: int
    id: str
    conditions: tuple[Condition, ...]
    action: Action | None
    reason: str | None
    approval: ApprovalRequirement | None
    mask: tuple[str, ...]
    limit: RuleLimit | None
    servers: tuple[str, ...] | None
    """Exact server names to index under, or None when the rule is not limited to exact names."""
    kind: Kind | None
    names: tuple[str, ...] | None

    def evaluate(self, request: PolicyRequest) -> Truth:
        """Kleene AND of the conditions, stopping at the first FALSE.

        Raises:
            CelEvaluationError: the rule's ``when:`` failed to evaluate.
        """
        result = Truth.TRUE
        for condition in self.conditions:
            truth = condition.test(request)
            if truth is Truth.FALSE:
                return truth
            if truth is Truth.UNKNOWN:
                result = truth
        return result

    def probe(self, request: PolicyRequest) -> Probe:
        """Evaluate only the conditions that do not depend on the call."""
        unknown = depends = False
        for condition in self.conditions:
            if condition.per_call:
                depends = True
                continue
            truth = condition.test(request)
            if truth is Truth.FALSE:
                return Probe.NO
            unknown = unknown or truth is Truth.UNKNOWN
        if unknown:
            return Probe.MIXED if depends else Probe.UNKNOWN
        return Probe.DEPENDS if depends else Probe.YES


def compile_rules(settings: PolicySettings) -> tuple[list[CompiledRule], list[Problem]]:
    """Compile every rule, collecting (not raising) regex and CEL problems with their paths."""
    rules: list[CompiledRule] = []
    problems: list[Problem] = []
    raw = settings.model_dump(mode="json", by_alias=True)
    for index, rule in enumerate(settings.rules):
        where = describe_location(("rules", index), raw)
        conditions = _conditions(rule, where, problems)
        if conditions is not None:
            rules.append(_compiled(index, rule, conditions, settings.approval_expires_s))
    return rules, problems


def _conditions(rule: RuleSettings, where: str, problems: list[Problem]) -> tuple[Condition, ...] | None:
    match = rule.match
    conditions: list[Condition] = []
    ok = True
    if match.server is not None:
        conditions.append(ServerCondition(match.server))
    for field, kind in _TARGETS:
        patterns = getattr(match, field)
        if patterns is not None:
            conditions.append(TargetCondition(kind, patterns))
    if match.subject is not None:
        conditions.append(SubjectCondition(match.subject))
    if match.groups is not None:
        conditions.append(GroupsCondition(match.groups))
    for key, expected in (match.annotations or {}).items():
        conditions.append(AnnotationCondition(key, expected))
    for path, spec in (match.args or {}).items():
        regex = None
        if spec.regex is not None:
            try:
                regex = re2.compile(spec.regex, _RE2_OPTIONS)
            except re2.error as exc:
                problems.append(Problem(f"{where}.match.args.{path}.regex", f"not a valid RE2 regex: {_text(exc)}"))
                ok = False
                continue
        conditions.append(ArgumentCondition(path, spec, regex))
    if match.time is not None:
        conditions.append(TimeCondition(match.time))
    if rule.when is not None:
        try:
            conditions.append(CelCondition(rule.when))
        except CelCompileError as exc:
            problems.append(Problem(f"{where}.when", str(exc)))
            ok = False
    return tuple(conditions) if ok else None


def _compiled(index: int, rule: RuleSettings, conditions: tuple[Condition, ...], expires_s: float) -> CompiledRule:
    match = rule.match
    kind, names = None, None
    for field, target_kind in _TARGETS:
        patterns = getattr(match, field)
        if patterns is not None:
            kind = target_kind
            names = None if any(map(is_glob, patterns)) else tuple(patterns)
    approval = None
    if rule.action == "require_approval":
        approvers = rule.approvers
        approval = ApprovalRequirement(
            groups=approvers.groups if approvers else (),
            min_approvals=approvers.min if approvers else 1,
            deny_min=approvers.deny_min if approvers else 1,
            expires_s=float(rule.expires_s if rule.expires_s is not None else expires_s),
            mode=ApprovalMode(rule.mode or "hold"),
            confirm=Confirm(rule.confirm) if rule.confirm else None,
        )
    limit = rule.rate_limit
    return CompiledRule(
        index=index,
        id=rule.id,
        conditions=conditions,
        action=Action(rule.action) if rule.action else None,
        reason=rule.reason,
        approval=approval,
        mask=rule.mask,
        limit=RuleLimit(limit.calls, float(limit.per_s), RateLimitKey(limit.key)) if limit else None,
        servers=None if match.server is None or any(map(is_glob, match.server)) else tuple(match.server),
        kind=kind,
        names=names,
    )


def _text(exc: Exception) -> str:
    message = exc.args[0] if exc.args else exc
    return message.decode() if isinstance(message, bytes) else str(message)


_Key = tuple[str | None, Kind | None, str | None]


class RuleIndex:
    """Rules bucketed by (exact server | any, kind | any, exact name | any); lookups keep file order."""

    __slots__ = ("_buckets", "_cache")

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self._buckets: dict[_Key, list[CompiledRule]] = {}
        for rule in rules:
            servers: Sequence[str | None] = rule.servers or (None,)
            names: Sequence[str | None] = rule.names or (None,)
            for server, name in itertools.product(servers, names):
                self._buckets.setdefault((server, rule.kind, name), []).append(rule)
        self._cache: dict[_Key, tuple[CompiledRule, ...]] = {}

    def candidates(self, server: str, kind: Kind, name: str) -> tuple[CompiledRule, ...]:
        """Every rule that can match a request to ``server``/``kind``/``name``, in file order."""
        key = (server, kind, name)
        found = self._cache.get(key)
        if found is None:
            buckets = self._buckets
            found = tuple(sorted(
                itertools.chain.from_iterable(
                    buckets.get(lookup, ())
                    for lookup in ((server, kind, name), (server, kind, None), (server, None, None),
                                   (None, kind, name), (None, kind, None), (None, None, None))
                ),
                key=lambda rule: rule.index,
            ))
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()  # names come from callers: keep the memo bounded
            self._cache[key] = found
        return found
