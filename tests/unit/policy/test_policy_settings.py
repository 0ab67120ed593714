"""Loading policies: precise error paths, load-time compilation of regexes and CEL, and the policy hash."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.errors import ConfigError
from bastion.policy import PolicyEngine, validate_policy


def rule(**fields: Any) -> dict[str, Any]:
    return {"id": "r1", "action": "allow", **fields}


INVALID: list[tuple[str, Any, str, str]] = [
    ("unknown top-level key", {"defaults": "deny"}, "policy.defaults", "Extra inputs are not permitted"),
    ("bad default", {"default": "maybe"}, "policy.default", "Input should be 'deny' or 'allow'"),
    ("unknown rule key", {"rules": [rule(matches={})]}, "policy.rules[0](r1).matches", "Extra inputs"),
    ("unknown match key", {"rules": [rule(match={"user": "x"})]}, "policy.rules[0](r1).match.user", "Extra inputs"),
    ("no contribution", {"rules": [{"id": "r1"}]}, "policy.rules[0](r1)", "needs an action, a mask or a rate_limit"),
    ("approvers without approval", {"rules": [rule(approvers={"groups": ["dba"]})]}, "policy.rules[0](r1)",
     "approvers only apply to action: require_approval"),
    ("duplicate ids", {"rules": [rule(), rule()]}, "policy", "rule id 'r1' is used twice"),
    ("two targets", {"rules": [rule(match={"tool": "a", "prompt": "b"})]}, "policy.rules[0](r1).match",
     "one kind of target"),
    ("empty condition", {"rules": [rule(match={"args": {"x": {}}})]}, "policy.rules[0](r1).match.args.x",
     "at least one of"),
    ("string where number", {"rules": [rule(match={"args": {"x": {"lt": "5"}}})]},
     "policy.rules[0](r1).match.args.x.lt", "valid"),
    ("bool where number", {"rules": [rule(rate_limit={"calls": True, "per_s": 1})]},
     "policy.rules[0](r1).rate_limit.calls", "valid integer"),
    ("zero calls", {"rules": [rule(rate_limit={"calls": 0, "per_s": 1})]}, "policy.rules[0](r1).rate_limit.calls",
     "greater than or equal to 1"),
    ("bad zone", {"rules": [rule(match={"time": {"tz": "Mars/Base"}})]}, "policy.rules[0](r1).match.time",
     "unknown time zone"),
    ("bad hours", {"rules": [rule(match={"time": {"hours": "9-17"}})]}, "policy.rules[0](r1).match.time",
     "HH:MM-HH:MM"),
    ("bad day", {"rules": [rule(match={"time": {"days": ["monday"]}})]}, "policy.rules[0](r1).match.time.days[0]",
     "Input should be"),
    ("empty any-of", {"rules": [rule(match={"groups": []})]}, "policy.rules[0](r1).match.groups", "at least 1"),
    ("bad rule id", {"rules": [rule(id="has space")]}, "policy.rules[0](has space).id", "pattern"),
]


@pytest.mark.parametrize(("case", "data", "where", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_problem_is_reported_at_its_path_when_policy_is_invalid(case: str, data: Any, where: str,
                                                                 message: str) -> None:
    settings, problems = validate_policy(data)
    assert settings is None
    assert any(p.where == where and message in p.message for p in problems), problems
    with pytest.raises(ConfigError) as info:
        PolicyEngine.from_mapping(data)
    assert where in str(info.value)


@pytest.mark.parametrize(("field", "value", "where", "message"), [
    ("match", {"args": {"sql": {"regex": "(?=lookahead)"}}}, "policy.rules[0](r1).match.args.sql.regex",
     "not a valid RE2 regex"),
    ("when", "args.(", "policy.rules[0](r1).when", "CEL does not parse"),
    ("when", "user == 'x'", "policy.rules[0](r1).when", "unknown variable(s) ['user']"),
])
def test_regex_and_cel_are_compiled_at_load_when_invalid(field: str, value: Any, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        PolicyEngine.from_mapping({"rules": [rule(**{field: value})]})
    problems = info.value.data["problems"]
    assert [(p["where"], message in p["message"]) for p in problems] == [(where, True)]


def test_every_compile_problem_is_listed_when_several_rules_are_invalid() -> None:
    with pytest.raises(ConfigError) as info:
        PolicyEngine.from_mapping({"rules": [rule(id="a", when="("), rule(id="b", when=")")]})
    assert [p["where"] for p in info.value.data["problems"]] == ["policy.rules[0](a).when", "policy.rules[1](b).when"]


def test_hash_is_the_same_when_policies_differ_only_in_shorthand() -> None:
    short = PolicyEngine.from_mapping({"rules": [rule(match={"tool": "q", "groups": "sre"})]})
    long = PolicyEngine.from_mapping({"default": "deny", "rules": [
        rule(match={"tool": ["q"], "groups": ["sre"]}, mask=[])]})
    assert short.policy_hash == long.policy_hash
    assert len(short.policy_hash) == 64


def test_hash_changes_when_policy_changes() -> None:
    base = PolicyEngine.from_mapping({"rules": [rule(match={"args": {"x": {"eq": None}}})]})
    other = PolicyEngine.from_mapping({"rules": [rule(match={"args": {"x": {"exists": True}}})]})
    reordered = PolicyEngine.from_mapping({"rules": [rule(id="b"), rule(id="a")]})
    ordered = PolicyEngine.from_mapping({"rules": [rule(id="a"), rule(id="b")]})
    assert base.policy_hash != other.policy_hash
    assert reordered.policy_hash != ordered.policy_hash


def test_eq_null_is_distinct_from_no_eq() -> None:
    settings, _ = validate_policy({"rules": [rule(match={"args": {"x": {"eq": None}}})]})
    assert settings is not None
    assert settings.model_dump(mode="json", by_alias=True)["rules"][0]["match"]["args"] == {"x": {"eq": None}}


def test_settings_are_frozen() -> None:
    settings, _ = validate_policy({"rules": [rule()]})
    assert settings is not None
    with pytest.raises(ValueError, match="frozen"):
        settings.default = "allow"  # type: ignore[misc]
