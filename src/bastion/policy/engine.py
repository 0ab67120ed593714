"""``PolicyEngine``: built once from validated settings, then decides calls and list visibility.

Owns the evaluation order (strictest matching rule wins; see docs/policy.md), the fail-closed
handling of CEL errors and undecidable conditions, and the policy hash. Pure and synchronous:
rate-limit counting (ratelimit.py), approvals and masking happen in other stages.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rfc8785

from bastion.errors import DenialError
from bastion.jsonrpc import codes
from bastion.policy.cel import CelEvaluationError
from bastion.policy.conditions import Truth
from bastion.policy.model import (
    STRICTNESS,
    Action,
    Decision,
    Kind,
    PolicyRequest,
    RateLimit,
    RateLimitKey,
    ToolChangeMode,
)
from bastion.policy.rules import CompiledRule, Probe, RuleIndex, RuleLimit, compile_rules
from bastion.policy.settings import (
    PolicySettings,
    parse_policy_text,
    problems_error,
    read_policy_file,
    validate_policy,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PolicyEngine:
    """A compiled policy. Immutable after construction; share one instance between tasks."""

    __slots__ = ("_default", "_index", "on_tool_change", "policy_hash", "rules", "settings")

    def __init__(self, settings: PolicySettings, *, source: str = "policy") -> None:
        """Compile ``settings``.

        Raises:
            ConfigError: a regex or CEL expression does not compile (every problem is listed).
        """
        rules, problems = compile_rules(settings)
        if problems:
            raise problems_error(source, problems)
        self.settings = settings
        self.rules = tuple(rules)
        self.policy_hash = compute_policy_hash(settings)
        self.on_tool_change = ToolChangeMode(settings.on_tool_change)
        self._index = RuleIndex(rules)
        self._default = Action(settings.default)

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "policy") -> PolicyEngine:
        """Validate and compile a ``policy:`` mapping.

        Raises:
            ConfigError: the mapping does not validate or compile.
        """
        settings, problems = validate_policy(data)
        if settings is None:
            raise problems_error(source, problems)
        return cls(settings, source=source)

    @classmethod
    def from_text(cls, text: str, *, source: str) -> PolicyEngine:
        """Validate and compile a policy file's YAML text (top-level key ``policy:``).

        Raises:
            ConfigError: the text is not YAML, or the policy does not validate or compile.
        """
        return cls.from_mapping(parse_policy_text(text, source), source=source)

    @classmethod
    def from_file(cls, path: Path) -> PolicyEngine:
        """Read, validate and compile a policy file (blocking I/O: call at startup or in a thread).

        Raises:
            ConfigError: the file cannot be read, or its policy is invalid.
        """
        return cls.from_text(read_policy_file(path), source=str(path))

    def candidates(self, request: PolicyRequest) -> tuple[CompiledRule, ...]:
        """The rules that can match ``request``'s server, kind and name, in file order."""
        return self._index.candidates(request.server, request.kind, request.name)

    def decide(self, request: PolicyRequest) -> Decision:
        """Decide one call: the strictest matching rule wins, ties go to the earlier rule.

        A rule whose conditions are UNKNOWN counts as matching, and then the default competes too
        unless some rule matched for certain; a CEL error makes its rule a deny.
        """
        best: CompiledRule | None = None
        best_action = self._default
        best_rank = -1
        certain = False
        failure: tuple[CompiledRule, str] | None = None
        masks: dict[str, None] = {}
        limits: list[RateLimit] = []
        for rule in self._index.candidates(request.server, request.kind, request.name):
            try:
                truth = rule.evaluate(request)
            except CelEvaluationError as exc:
                if failure is None:
                    failure = (rule, str(exc))
                continue
            if truth is Truth.FALSE:
                continue
            masks.update(dict.fromkeys(rule.mask))
            if rule.limit is not None:
                limits.append(_rate_limit(rule.id, rule.limit, request))
            if rule.action is not None:
                certain = certain or truth is Truth.TRUE
                rank = STRICTNESS[rule.action]
                if rank > best_rank:
                    best, best_action, best_rank = rule, rule.action, rank
        profiles, rate_limits = tuple(masks), tuple(limits)
        if failure is not None and (best is None or best.action is not Action.DENY or best.index > failure[0].index):
            rule, message = failure
            return self._decision(Action.DENY, rule.id, f"rule {rule.id!r} could not be evaluated: {message}",
                                  profiles, rate_limits)
        if best is None or (not certain and STRICTNESS[self._default] > best_rank):
            return self._decision(self._default, None, f"no rule decided; the policy default is {self._default}",
                                  profiles, rate_limits)
        return Decision(
            action=best_action,
            rule_id=best.id,
            reason=best.reason or _default_reason(best),
            mask_profiles=profiles,
            approval=best.approval,
            rate_limits=rate_limits,
            policy_hash=self.policy_hash,
        )

    def visible(self, subject: str, groups: frozenset[str], server: str, kind: Kind, name: str,
                annotations: Mapping[str, Any] | None, upstream_trusted: bool) -> bool:
        """Whether to list a tool, prompt or resource: could some call to it be allowed or approved?

        Conditions on arguments, time and CEL are assumed satisfiable either way; untrusted
        annotations are not (a deny that may apply hides, an allow that may not apply grants nothing).
        """
        request = PolicyRequest(subject, groups, server, kind, name, {}, annotations, upstream_trusted, _EPOCH)
        granted = self._default is not Action.DENY
        for rule in self._index.candidates(server, kind, name):
            if rule.action is None:
                continue
            probe = rule.probe(request)
            if rule.action is Action.DENY:
                if probe in (Probe.YES, Probe.UNKNOWN):
                    return False
            elif probe in (Probe.YES, Probe.DEPENDS):
                granted = True
        return granted

    def _decision(self, action: Action, rule_id: str | None, reason: str, profiles: tuple[str, ...],
                  rate_limits: tuple[RateLimit, ...]) -> Decision:
        return Decision(action, rule_id, reason, profiles, None, rate_limits, self.policy_hash)


def compute_policy_hash(settings: PolicySettings) -> str:
    """SHA-256 (hex) of the RFC 8785 canonical JSON of the normalised policy (defaults filled in)."""
    canonical = rfc8785.dumps(settings.model_dump(mode="json", by_alias=True))
    return hashlib.sha256(canonical).hexdigest()


def denial_error(decision: Decision) -> DenialError:
    """The POLICY_DENIED error for a DENY decision; ``data.rule`` names the deciding rule."""
    return DenialError(decision.reason, code=codes.POLICY_DENIED,
                       data={"rule": decision.rule_id, "policy_hash": decision.policy_hash})


def _rate_limit(rule_id: str, limit: RuleLimit, request: PolicyRequest) -> RateLimit:
    parts = [rule_id, request.subject]
    if limit.key is RateLimitKey.SUBJECT_TOOL:
        parts += [request.server, request.kind.value, request.name]
    return RateLimit(rule_id, json.dumps(parts, ensure_ascii=False), limit.calls, limit.per_s)


def _default_reason(rule: CompiledRule) -> str:
    if rule.action is Action.DENY:
        return f"denied by policy rule {rule.id!r}"
    if rule.action is Action.REQUIRE_APPROVAL:
        return f"policy rule {rule.id!r} requires approval"
    return f"allowed by policy rule {rule.id!r}"
