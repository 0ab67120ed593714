"""Evaluation order: strictest matching rule wins, file order breaks ties, undecidable means conservative."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from conftest import EngineFactory, RequestFactory

from bastion.jsonrpc import codes
from bastion.policy import Action, ApprovalMode, Confirm, Kind, PolicyRequest, denial_error

POLICY = r"""
policy:
  default: deny
  rules:
    - id: sre-read
      match: {groups: [sre], server: postgres, tool: query}
      action: allow
    - id: destructive-sql
      match: {server: postgres, tool: query, args: {sql: {regex: "(?i)\\b(drop|truncate|delete|update)\\b"}}}
      action: require_approval
      approvers: {groups: [dba], min: 2, deny_min: 1}
      expires_s: 600
      mode: pending_error
      confirm: user
    - id: destructive-tools
      match: {annotations: {destructiveHint: true}}
      action: require_approval
    - id: interns-blocked
      match: {groups: [intern]}
      action: deny
      reason: interns may not use tools
    - id: interns-query
      match: {groups: [intern], tool: query}
      action: allow
    - id: agents-masked
      match: {subject: "system:serviceaccount:agents:*"}
      mask: [pii, secrets]
    - id: postgres-masked
      match: {server: postgres}
      mask: [secrets, tokens]
    - id: reader
      match: {server: docs}
      action: allow
"""

READ_ONLY = {"readOnlyHint": True}
DESTRUCTIVE = {"destructiveHint": True}

CASES: list[tuple[str, dict[str, Any], Action, str | None, tuple[str, ...]]] = [
    ("allow rule decides", dict(groups=("sre",), args={"sql": "select 1"}, annotations=READ_ONLY),
     Action.ALLOW, "sre-read", ("secrets", "tokens")),
    ("a later approval rule beats an earlier allow", dict(groups=("sre",), args={"sql": "DROP TABLE t"},
     annotations=READ_ONLY), Action.REQUIRE_APPROVAL, "destructive-sql", ("secrets", "tokens")),
    ("no deciding rule: default deny", dict(args={"sql": "select 1"}, annotations=READ_ONLY),
     Action.DENY, None, ("secrets", "tokens")),
    ("approval rule applies without any allow", dict(args={"sql": "truncate t"}, annotations=READ_ONLY),
     Action.REQUIRE_APPROVAL, "destructive-sql", ("secrets", "tokens")),
    ("deny beats an earlier allow", dict(groups=("sre", "intern"), args={"sql": "select 1"}, annotations=READ_ONLY),
     Action.DENY, "interns-blocked", ("secrets", "tokens")),
    ("deny beats a later allow", dict(groups=("intern",), annotations=READ_ONLY),
     Action.DENY, "interns-blocked", ("secrets", "tokens")),
    ("equal strictness: the earlier rule is reported", dict(groups=("sre",), args={"sql": "delete from t"},
     annotations=DESTRUCTIVE), Action.REQUIRE_APPROVAL, "destructive-sql", ("secrets", "tokens")),
    ("untrusted annotations may be destructive", dict(groups=("sre",), args={"sql": "select 1"},
     annotations=READ_ONLY, trusted=False), Action.REQUIRE_APPROVAL, "destructive-tools", ("secrets", "tokens")),
    ("an undecidable approval rule does not beat the default deny", dict(server="github", name="list_issues",
     annotations=READ_ONLY, trusted=False), Action.DENY, None, ()),
    ("trusted read-only tool with no rule: default", dict(server="github", name="list_issues",
     annotations=READ_ONLY), Action.DENY, None, ()),
    ("trusted tool without annotations is destructive by MCP default", dict(server="github", name="merge"),
     Action.REQUIRE_APPROVAL, "destructive-tools", ()),
    ("mask-only rules accumulate in order, without duplicates",
     dict(subject="system:serviceaccount:agents:bot", groups=("sre",), args={"sql": "select 1"},
          annotations=READ_ONLY), Action.ALLOW, "sre-read", ("pii", "secrets", "tokens")),
    ("mask-only rules never decide", dict(subject="system:serviceaccount:agents:bot", server="github", name="x",
     annotations=READ_ONLY), Action.DENY, None, ("pii", "secrets")),
    ("a resource is not a tool", dict(groups=("sre",), kind=Kind.RESOURCE, name="query"),
     Action.DENY, None, ("secrets", "tokens")),
    ("a rule without a target matches resources too", dict(server="docs", kind=Kind.RESOURCE, name="file:///a"),
     Action.ALLOW, "reader", ()),
]


@pytest.mark.parametrize(("case", "call", "action", "rule_id", "masks"), CASES, ids=[c[0] for c in CASES])
def test_precedence_when_rules_overlap(engine_from: EngineFactory, request_for: RequestFactory, case: str,
                                       call: dict[str, Any], action: Action, rule_id: str | None,
                                       masks: tuple[str, ...]) -> None:
    engine = engine_from(POLICY)
    decision = engine.decide(request_for(**call))
    assert (decision.action, decision.rule_id, decision.mask_profiles) == (action, rule_id, masks)
    assert decision.policy_hash == engine.policy_hash


def test_deny_reason_is_the_rules_reason_when_given(engine_from: EngineFactory, request_for: RequestFactory) -> None:
    decision = engine_from(POLICY).decide(request_for(groups=("intern",), annotations=READ_ONLY))
    assert decision.reason == "interns may not use tools"
    assert decision.approval is None


def test_require_approval_carries_the_requirement(engine_from: EngineFactory, request_for: RequestFactory) -> None:
    decision = engine_from(POLICY).decide(request_for(args={"sql": "update t set x=1"}, annotations=READ_ONLY))
    assert decision.approval is not None
    assert (decision.approval.groups, decision.approval.min_approvals, decision.approval.deny_min) == (("dba",), 2, 1)
    assert (decision.approval.expires_s, decision.approval.mode, decision.approval.confirm) == (
        600.0, ApprovalMode.PENDING_ERROR, Confirm.USER)


def test_approval_defaults_when_rule_sets_none(engine_from: EngineFactory, request_for: RequestFactory) -> None:
    decision = engine_from(POLICY).decide(request_for(server="github", name="merge"))
    assert decision.approval is not None
    assert (decision.approval.groups, decision.approval.min_approvals, decision.approval.expires_s,
            decision.approval.mode, decision.approval.confirm) == ((), 1, 300.0, ApprovalMode.HOLD, None)


DEFAULT_ALLOW = """
policy:
  default: allow
  rules:
    - id: no-destructive-untrusted
      match: {annotations: {destructiveHint: true}}
      action: deny
    - id: limit-check
      match: {tool: bulk, args: {count: {gt: 100}}}
      action: deny
"""


@pytest.mark.parametrize(("call", "action", "rule_id"), [
    (dict(annotations=READ_ONLY), Action.ALLOW, None),
    (dict(annotations=READ_ONLY, trusted=False), Action.DENY, "no-destructive-untrusted"),
    (dict(annotations=None), Action.DENY, "no-destructive-untrusted"),
    (dict(name="bulk", args={"count": 5}, annotations=READ_ONLY), Action.ALLOW, None),
    (dict(name="bulk", args={"count": 500}, annotations=READ_ONLY), Action.DENY, "limit-check"),
    (dict(name="bulk", args={"count": "500"}, annotations=READ_ONLY), Action.DENY, "limit-check"),
])
def test_undecidable_conditions_resolve_to_the_stricter_outcome_when_default_allows(
        engine_from: EngineFactory, request_for: RequestFactory, call: dict[str, Any], action: Action,
        rule_id: str | None) -> None:
    decision = engine_from(DEFAULT_ALLOW).decide(request_for(**call))
    assert (decision.action, decision.rule_id) == (action, rule_id)


CEL_POLICY = """
policy:
  default: allow
  rules:
    - id: masked
      mask: [pii]
    - id: big-limit
      match: {tool: search}
      when: "args.limit > 100"
      action: deny
    - id: bad-type
      match: {tool: weird}
      when: "args.limit"
      action: allow
    - id: later-mask
      mask: [secrets]
"""


@pytest.mark.parametrize(("call", "action", "rule_id"), [
    (dict(name="search", args={"limit": 5}), Action.ALLOW, None),
    (dict(name="search", args={"limit": 500}), Action.DENY, "big-limit"),
    (dict(name="search", args={}), Action.DENY, "big-limit"),
    (dict(name="search", args={"limit": "x"}), Action.DENY, "big-limit"),
    (dict(name="weird", args={"limit": 3}), Action.DENY, "bad-type"),
])
def test_cel_errors_fail_closed_when_evaluation_breaks(engine_from: EngineFactory, request_for: RequestFactory,
                                                       call: dict[str, Any], action: Action,
                                                       rule_id: str | None) -> None:
    decision = engine_from(CEL_POLICY).decide(request_for(**call))
    assert (decision.action, decision.rule_id) == (action, rule_id)
    assert decision.mask_profiles == ("pii", "secrets")


def test_cel_error_reason_is_recorded_when_evaluation_breaks(engine_from: EngineFactory,
                                                            request_for: RequestFactory) -> None:
    decision = engine_from(CEL_POLICY).decide(request_for(name="search", args={}))
    assert decision.reason.startswith("rule 'big-limit' could not be evaluated: ")
    assert "limit" in decision.reason


def test_rate_limits_are_collected_from_every_matching_rule(engine_from: EngineFactory,
                                                            request_for: RequestFactory) -> None:
    engine = engine_from("""
    policy:
      rules:
        - id: per-caller
          rate_limit: {calls: 100, per_s: 60}
        - id: per-tool
          match: {tool: query}
          action: allow
          rate_limit: {calls: 5, per_s: 1, key: subject+tool}
        - id: elsewhere
          match: {server: other}
          rate_limit: {calls: 1, per_s: 1}
    """)
    decision = engine.decide(request_for())
    assert [(limit.rule_id, limit.key, limit.calls, limit.per_s) for limit in decision.rate_limits] == [
        ("per-caller", '["per-caller", "alice"]', 100, 60.0),
        ("per-tool", '["per-tool", "alice", "postgres", "tool", "query"]', 5, 1.0),
    ]


def test_request_rejects_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        PolicyRequest("s", frozenset(), "x", Kind.TOOL, "t", {}, {}, True, datetime(2025, 1, 1))


def test_denial_error_names_rule_and_policy(engine_from: EngineFactory, request_for: RequestFactory) -> None:
    decision = engine_from(POLICY).decide(request_for(groups=("intern",), annotations=READ_ONLY))
    error = denial_error(decision)
    assert (error.code, error.public_message) == (codes.POLICY_DENIED, "interns may not use tools")
    assert error.data == {"rule": "interns-blocked", "policy_hash": decision.policy_hash}
