"""Each matcher, positive and negative, seen through ``explain`` (MATCHED / NOT_MATCHED / UNKNOWN)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import RequestFactory

from bastion.policy import Action, Kind, Outcome, PolicyEngine, explain

SATURDAY_NOON = datetime(2025, 6, 7, 12, 0, tzinfo=UTC)
MONDAY_23H_PARIS = datetime(2025, 6, 2, 21, 0, tzinfo=UTC)
MONDAY_18H_PARIS = datetime(2025, 6, 2, 16, 0, tzinfo=UTC)
OFFICE = {"tz": "Europe/Paris", "days": ["mon", "tue", "wed", "thu", "fri"], "hours": ["09:00-12:30", "13:30-17:00"]}

M, N, U = Outcome.MATCHED, Outcome.NOT_MATCHED, Outcome.UNKNOWN

CASES: list[tuple[str, dict[str, Any], dict[str, Any], Outcome]] = [
    ("subject glob", {"subject": "system:serviceaccount:agents:*"}, dict(subject="system:serviceaccount:agents:b"), M),
    ("subject glob other namespace", {"subject": "system:serviceaccount:agents:*"},
     dict(subject="system:serviceaccount:other:b"), N),
    ("subject any-of with ?", {"subject": ["bob", "al?ce"]}, dict(subject="alice"), M),
    ("subject glob is anchored", {"subject": "alice"}, dict(subject="alice2"), N),
    ("groups any-of", {"groups": ["sre", "dba"]}, dict(groups=("dev", "dba")), M),
    ("groups none shared", {"groups": ["sre", "dba"]}, dict(groups=("dev",)), N),
    ("server exact", {"server": "postgres"}, dict(server="postgres"), M),
    ("server mismatch", {"server": "postgres"}, dict(server="github"), N),
    ("server glob", {"server": "pg-*"}, dict(server="pg-prod"), M),
    ("tool glob", {"tool": "read_*"}, dict(name="read_file"), M),
    ("tool glob mismatch", {"tool": "read_*"}, dict(name="write_file"), N),
    ("tool rule vs a resource", {"tool": "read_*"}, dict(kind=Kind.RESOURCE, name="read_file"), N),
    ("resource URI glob", {"resource": "file:///data/*"}, dict(kind=Kind.RESOURCE, name="file:///data/a/b.csv"), M),
    ("resource rule vs a tool", {"resource": "file:///data/*"}, dict(name="file:///data/a"), N),
    ("prompt name", {"prompt": "summarize"}, dict(kind=Kind.PROMPT, name="summarize"), M),
    ("prompt rule vs a tool", {"prompt": "summarize"}, dict(name="summarize"), N),
    ("args path eq", {"args": {"filter.owner": {"eq": "me"}}}, dict(args={"filter": {"owner": "me"}}), M),
    ("args path eq other value", {"args": {"filter.owner": {"eq": "me"}}}, dict(args={"filter": {"owner": "you"}}), N),
    ("args path absent", {"args": {"filter.owner": {"eq": "me"}}}, dict(args={"filter": {}}), N),
    ("args path through a string", {"args": {"filter.owner": {"eq": "me"}}}, dict(args={"filter": "me"}), U),
    ("args list index", {"args": {"items.1.id": {"eq": 7}}}, dict(args={"items": [{"id": 1}, {"id": 7}]}), M),
    ("eq is type-strict for booleans", {"args": {"n": {"eq": 1}}}, dict(args={"n": True}), N),
    ("eq treats 1 and 1.0 alike", {"args": {"n": {"eq": 1}}}, dict(args={"n": 1.0}), M),
    ("eq on objects", {"args": {"o": {"eq": {"a": [1, "x"]}}}}, dict(args={"o": {"a": [1, "x"]}}), M),
    ("regex", {"args": {"sql": {"regex": "(?i)\\bdrop\\b"}}}, dict(args={"sql": "x; DROP table"}), M),
    ("regex no match", {"args": {"sql": {"regex": "(?i)\\bdrop\\b"}}}, dict(args={"sql": "select dropped"}), N),
    ("regex on a number", {"args": {"sql": {"regex": "drop"}}}, dict(args={"sql": 5}), U),
    ("lt", {"args": {"limit": {"lt": 100}}}, dict(args={"limit": 99}), M),
    ("lt boundary", {"args": {"limit": {"lt": 100}}}, dict(args={"limit": 100}), N),
    ("le boundary", {"args": {"limit": {"le": 100}}}, dict(args={"limit": 100}), M),
    ("gt", {"args": {"limit": {"gt": 100}}}, dict(args={"limit": 100.5}), M),
    ("ge", {"args": {"limit": {"ge": 100}}}, dict(args={"limit": 99}), N),
    ("range", {"args": {"limit": {"ge": 1, "le": 10}}}, dict(args={"limit": 11}), N),
    ("numeric compare on a string", {"args": {"limit": {"gt": 100}}}, dict(args={"limit": "500"}), U),
    ("numeric compare on a boolean", {"args": {"limit": {"gt": 0}}}, dict(args={"limit": True}), U),
    ("numeric compare on absent", {"args": {"limit": {"gt": 0}}}, dict(args={}), N),
    ("in", {"args": {"env": {"in": ["dev", "staging"]}}}, dict(args={"env": "dev"}), M),
    ("in no member", {"args": {"env": {"in": ["dev", "staging"]}}}, dict(args={"env": "prod"}), N),
    ("exists true", {"args": {"token": {"exists": True}}}, dict(args={"token": None}), M),
    ("exists true absent", {"args": {"token": {"exists": True}}}, dict(args={}), N),
    ("exists false absent", {"args": {"token": {"exists": False}}}, dict(args={}), M),
    ("exists false present", {"args": {"token": {"exists": False}}}, dict(args={"token": 1}), N),
    ("annotation trusted", {"annotations": {"destructiveHint": True}}, dict(annotations={"destructiveHint": True}), M),
    ("annotation trusted other value", {"annotations": {"destructiveHint": True}},
     dict(annotations={"readOnlyHint": True}), N),
    ("annotation MCP default", {"annotations": {"destructiveHint": True}}, dict(annotations={}), M),
    ("annotation MCP default openWorld", {"annotations": {"openWorldHint": False}}, dict(annotations={}), N),
    ("annotation untrusted upstream", {"annotations": {"destructiveHint": True}},
     dict(annotations={"destructiveHint": False}, trusted=False), U),
    ("annotation unknown tool", {"annotations": {"readOnlyHint": True}}, dict(annotations=None), U),
    ("annotation on a prompt", {"annotations": {"readOnlyHint": True}}, dict(kind=Kind.PROMPT, name="p"), N),
    ("time window inside", {"time": OFFICE}, dict(), M),
    ("time window weekend", {"time": OFFICE}, dict(now=SATURDAY_NOON), N),
    ("time window after hours", {"time": OFFICE}, dict(now=MONDAY_18H_PARIS), N),
    ("time window overnight", {"time": {"tz": "Europe/Paris", "hours": "22:00-06:00"}},
     dict(now=MONDAY_23H_PARIS), M),
    ("time window overnight daytime", {"time": {"tz": "Europe/Paris", "hours": "22:00-06:00"}}, dict(), N),
]


@pytest.mark.parametrize(("case", "match", "call", "outcome"), CASES, ids=[c[0] for c in CASES])
def test_matcher_outcome_when_request_varies(request_for: RequestFactory, case: str, match: dict[str, Any],
                                             call: dict[str, Any], outcome: Outcome) -> None:
    engine = PolicyEngine.from_mapping({"rules": [{"id": "r", "match": match, "action": "allow"}]})
    (trace,) = explain(engine, request_for(**call)).traces
    assert trace.outcome is outcome, trace.detail
    expected = Action.ALLOW if outcome is M else Action.DENY
    assert engine.decide(request_for(**call)).action is expected


CEL_CASES: list[tuple[str, dict[str, Any], Outcome]] = [
    ("size(args.to) > 3", dict(args={"to": ["a", "b", "c", "d"]}), M),
    ("size(args.to) > 3", dict(args={"to": ["a"]}), N),
    ('subject.startsWith("svc:") && "sre" in groups', dict(subject="svc:x", groups=("sre",)), M),
    ('server == "postgres" && tool == "query" && kind == "tool"', dict(), M),
    ('tool == "" && name == "q"', dict(kind=Kind.PROMPT, name="q"), M),
    ("now.getDayOfWeek() == 1", dict(), M),
    ("args.to.exists(r, r.endsWith('@evil.com'))", dict(args={"to": ["a@x.org", "b@evil.com"]}), M),
    ("annotations.readOnlyHint", dict(annotations={"readOnlyHint": True}), M),
    ("annotations.readOnlyHint", dict(annotations={"readOnlyHint": True}, trusted=False), U),
    ("has(args.limit)", dict(args={}), N),
    ("args.limit > 1", dict(args={}), Outcome.ERROR),
]


@pytest.mark.parametrize(("expression", "call", "outcome"), CEL_CASES)
def test_cel_when_outcome_when_request_varies(request_for: RequestFactory, expression: str, call: dict[str, Any],
                                              outcome: Outcome) -> None:
    engine = PolicyEngine.from_mapping({"rules": [{"id": "r", "when": expression, "action": "allow"}]})
    (trace,) = explain(engine, request_for(**call)).traces
    assert trace.outcome is outcome, trace.detail


def test_every_condition_must_hold_when_a_rule_has_several(request_for: RequestFactory) -> None:
    engine = PolicyEngine.from_mapping({"rules": [{"id": "r", "action": "allow", "match": {
        "groups": ["sre"], "server": "postgres", "tool": "query", "args": {"db": {"eq": "prod"}}}}]})
    assert engine.decide(request_for(groups=("sre",), args={"db": "prod"})).action is Action.ALLOW
    assert engine.decide(request_for(groups=("sre",), args={"db": "dev"})).action is Action.DENY
    assert engine.decide(request_for(groups=("dev",), args={"db": "prod"})).action is Action.DENY
