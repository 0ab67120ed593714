"""``bastion policy test`` and ``bastion policy check``: traces, rendered text and collected problems."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EngineFactory

from bastion.errors import ConfigError
from bastion.policy import (
    Action,
    Kind,
    Outcome,
    build_test_request,
    check_policy_file,
    check_policy_text,
    explain,
    render_explanation,
)

POLICY = r"""
policy:
  rules:
    - id: sre-read
      match: {groups: [sre], server: postgres, tool: query}
      action: allow
    - id: destructive-sql
      match: {server: postgres, tool: query, args: {sql: {regex: "(?i)\\bdrop\\b"}}}
      action: require_approval
      approvers: {groups: [dba]}
    - id: destructive-tools
      match: {annotations: {destructiveHint: true}}
      action: require_approval
    - id: agents-masked
      match: {subject: "system:serviceaccount:agents:*"}
      mask: [pii, secrets]
"""


def test_explain_traces_every_rule_when_testing_a_call(engine_from: EngineFactory) -> None:
    request = build_test_request(subject="bob", groups=["sre"], server="postgres", name="query",
                                 args_json='{"sql": "DROP TABLE t"}')
    explanation = explain(engine_from(POLICY), request)
    assert (explanation.decision.action, explanation.decision.rule_id) == (Action.REQUIRE_APPROVAL, "destructive-sql")
    assert [(t.rule_id, t.outcome) for t in explanation.traces] == [
        ("sre-read", Outcome.MATCHED),
        ("destructive-sql", Outcome.MATCHED),
        ("destructive-tools", Outcome.UNKNOWN),
        ("agents-masked", Outcome.NOT_MATCHED),
    ]
    assert explanation.traces[3].detail == "subject matches ['system:serviceaccount:agents:*'] — got 'bob'"


def test_rendered_text_names_decision_rule_and_first_failing_condition(engine_from: EngineFactory) -> None:
    request = build_test_request(subject="bob", groups=["dev"], server="postgres", name="query",
                                 args_json='{"sql": "select 1"}', annotations={"readOnlyHint": True},
                                 upstream_trusted=True)
    text = render_explanation(explain(engine_from(POLICY), request))
    lines = text.splitlines()
    assert lines[1:3] == ["decision: deny", "rule:     (policy default)"]
    assert any(line.split() [:3] == ["sre-read", "not", "matched"] and "groups any of ['sre'] — got ['dev']" in line
               for line in lines)
    assert any(line.startswith("  destructive-sql") and "args.sql regex" in line and "got 'select 1'" in line
               for line in lines)


def test_build_test_request_rejects_bad_args_json() -> None:
    with pytest.raises(ConfigError, match="--args must be a JSON object"):
        build_test_request(subject="s", groups=[], server="x", name="t", args_json="[1]")
    with pytest.raises(ConfigError, match="--args is not JSON"):
        build_test_request(subject="s", groups=[], server="x", name="t", args_json="{")


def test_build_test_request_kinds_and_untrusted_default() -> None:
    request = build_test_request(subject="s", groups=["g"], server="x", name="p", kind=Kind.PROMPT)
    assert (request.kind, request.upstream_trusted, request.annotations, request.args) == (Kind.PROMPT, False, None, {})


def test_check_reports_every_error_with_its_path_when_file_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("policy:\n  rules:\n"
                    "    - {id: a, when: 'args.(', action: allow}\n"
                    "    - {id: b, match: {args: {x: {regex: '(?<=y)'}}}, action: deny}\n")
    problems = check_policy_file(path)
    assert [(p.where, p.severity) for p in problems] == [
        ("policy.rules[0](a).when", "error"),
        ("policy.rules[1](b).match.args.x.regex", "error"),
    ]


def test_check_reports_warnings_when_policy_is_legal_but_risky() -> None:
    problems = check_policy_text(
        "policy:\n  default: allow\n  rules:\n"
        "    - {id: d, match: {annotations: {destructiveHint: true}}, action: deny}\n"
        "    - {id: everyone, action: allow}\n"
        "    - {id: m, mask: [pii, nope]}\n",
        source="p.yaml", known_profiles={"pii"})
    assert [(p.where, p.severity) for p in problems] == [
        ("policy.default", "warning"),
        ("policy.rules[0](d).match.annotations", "warning"),
        ("policy.rules[1](everyone).match", "warning"),
        ("policy.rules[2](m).mask", "error"),
    ]


@pytest.mark.parametrize(("text", "message"), [
    ("policy: [\n", "not valid YAML"),
    ("rules: []\n", "exactly one top-level key"),
    ("policy:\n  default: sometimes\n", "Input should be 'deny' or 'allow'"),
])
def test_check_reports_unloadable_text(text: str, message: str) -> None:
    problems = check_policy_text(text, source="p.yaml")
    assert len(problems) == 1
    assert message in problems[0].message


def test_check_reports_unreadable_file(tmp_path: Path) -> None:
    (problem,) = check_policy_file(tmp_path / "missing.yaml")
    assert "cannot read policy file" in problem.message


def test_check_reports_nothing_when_policy_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace("match: {annotations", "match: {server: postgres, annotations"))
    assert check_policy_file(path) == []
