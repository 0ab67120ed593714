"""What ``bastion policy test`` shows: the decision, the deciding rule, and why each rule did or did not match.

Owns building a ``PolicyRequest`` from command-line style inputs and tracing every rule (not only
the indexed candidates) condition by condition. Returns structures and text; the CLI prints them.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bastion.errors import ConfigError
from bastion.policy.cel import CelEvaluationError
from bastion.policy.conditions import Truth
from bastion.policy.engine import PolicyEngine
from bastion.policy.model import Decision, Kind, PolicyRequest
from bastion.policy.rules import CompiledRule


class Outcome(enum.StrEnum):
    """How one rule fared against the request."""

    MATCHED = "matched"
    UNKNOWN = "unknown"
    """No condition failed but some could not be decided; the rule counts as matching (conservative)."""
    NOT_MATCHED = "not matched"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """One rule's outcome; ``detail`` names the first failing condition, the undecided ones, or the error."""

    rule_id: str
    outcome: Outcome
    contributes: str
    detail: str


@dataclass(frozen=True, slots=True)
class Explanation:
    """The decision for a request and a trace of every rule in file order."""

    request: PolicyRequest
    decision: Decision
    traces: tuple[RuleTrace, ...]


def build_test_request(*, subject: str, groups: Iterable[str], server: str, name: str, kind: Kind = Kind.TOOL,
                       args_json: str = "{}", annotations: Mapping[str, Any] | None = None,
                       upstream_trusted: bool = False, now: datetime | None = None) -> PolicyRequest:
    """A request as ``bastion policy test --subject S --groups G --server X --tool T --args JSON`` means it.

    Raises:
        ConfigError: ``args_json`` is not a JSON object.
    """
    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--args is not JSON: {exc}") from exc
    if not isinstance(args, dict):
        raise ConfigError("--args must be a JSON object")
    return PolicyRequest(subject, frozenset(groups), server, kind, name, args, annotations, upstream_trusted,
                         now or datetime.now(UTC))


def explain(engine: PolicyEngine, request: PolicyRequest) -> Explanation:
    """Decide ``request`` and trace every rule of ``engine`` against it."""
    return Explanation(request, engine.decide(request), tuple(_trace(rule, request) for rule in engine.rules))


def _trace(rule: CompiledRule, request: PolicyRequest) -> RuleTrace:
    undecided: list[str] = []
    for condition in rule.conditions:
        try:
            truth = condition.test(request)
        except CelEvaluationError as exc:
            return RuleTrace(rule.id, Outcome.ERROR, _contributes(rule), f"{condition.label} failed: {exc} (denies)")
        if truth is Truth.FALSE:
            return RuleTrace(rule.id, Outcome.NOT_MATCHED, _contributes(rule),
                             f"{condition.label} — got {condition.observed(request)}")
        if truth is Truth.UNKNOWN:
            undecided.append(f"{condition.label} — {condition.observed(request)}")
    if undecided:
        return RuleTrace(rule.id, Outcome.UNKNOWN, _contributes(rule), "undecided: " + "; ".join(undecided))
    return RuleTrace(rule.id, Outcome.MATCHED, _contributes(rule), "all conditions hold")


def _contributes(rule: CompiledRule) -> str:
    parts = []
    if rule.action is not None:
        parts.append(rule.action.value)
    if rule.mask:
        parts.append("mask " + ",".join(rule.mask))
    if rule.limit is not None:
        parts.append(f"rate limit {rule.limit.calls}/{rule.limit.per_s:g}s per {rule.limit.key.value}")
    return "; ".join(parts)


def render_explanation(explanation: Explanation) -> str:
    """The human-readable text ``bastion policy test`` prints."""
    request, decision = explanation.request, explanation.decision
    lines = [
        f"request:  {request.subject} (groups: {', '.join(sorted(request.groups)) or '-'}) -> "
        f"{request.server} {request.kind.value} {request.name!r}",
        f"decision: {decision.action.value}",
        f"rule:     {decision.rule_id or '(policy default)'}",
        f"reason:   {decision.reason}",
    ]
    if decision.approval is not None:
        approval = decision.approval
        lines.append(f"approval: groups {list(approval.groups) or 'any approver'}, min {approval.min_approvals}, "
                     f"deny_min {approval.deny_min}, expires {approval.expires_s:g}s, mode {approval.mode.value}"
                     + (f", confirm {approval.confirm.value}" if approval.confirm else ""))
    if decision.mask_profiles:
        lines.append(f"mask:     {', '.join(decision.mask_profiles)}")
    for limit in decision.rate_limits:
        lines.append(f"limit:    {limit.calls} calls per {limit.per_s:g}s (rule {limit.rule_id})")
    lines.append(f"policy:   {decision.policy_hash}")
    lines.append("rules:")
    for trace in explanation.traces:
        lines.append(f"  {trace.rule_id:<24} {trace.outcome.value:<12} [{trace.contributes}] {trace.detail}")
    return "\n".join(lines)
