"""``bastion policy test`` and ``bastion policy check``, driven through ``bastion.cli.main.main``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bastion.cli.main import main
from bastion.policy import PolicyEngine

POLICY = r"""
policy:
  default: deny
  rules:
    - id: sre-read
      match: {groups: [sre], server: postgres, tool: query}
      action: allow
    - id: destructive-sql
      match: {server: postgres, tool: query, args: {sql: {regex: "(?i)\\bdrop\\b"}}}
      action: require_approval
    - id: interns
      match: {groups: [intern]}
      action: deny
    - id: agents-masked
      match: {subject: "system:serviceaccount:agents:*"}
      mask: [pii]
"""

INVALID = r"""
policy:
  default: maybe
  rules:
    - id: bad-regex
      match: {tool: query, args: {sql: {regex: "(unclosed"}}}
      action: allow
    - id: no-action
      match: {tool: query}
    - id: bad-cel
      when: "args.x >"
      action: deny
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_test_prints_decision_rule_and_every_rule_when_deny_beats_allow(
    policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "policy", "test", "--policy", str(policy_file), "--subject", "alice",
                       "--groups", "sre,intern", "--server", "postgres", "--tool", "query", "--args", '{"sql": "select 1"}')

    assert code == 0
    lines = out.splitlines()
    assert "decision: deny" in lines and "rule:     interns" in lines
    rules = {line.split()[0]: line for line in lines if line.startswith("  ")}
    assert list(rules) == ["sre-read", "destructive-sql", "interns", "agents-masked"]
    assert " matched " in rules["sre-read"] and " matched " in rules["interns"]
    assert "not matched" in rules["destructive-sql"] and "got 'select 1'" in rules["destructive-sql"]
    assert "not matched" in rules["agents-masked"] and "got 'alice'" in rules["agents-masked"]


def test_test_reports_policy_default_when_no_rule_matches(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "test", "--policy", str(policy_file), "--subject", "bob",
                       "--server", "postgres", "--tool", "query")

    assert code == 0
    assert "decision: deny" in out and "rule:     (policy default)" in out


def test_test_prints_json_with_masks_and_traces_when_json_is_asked(
    policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "policy", "test", "--policy", str(policy_file), "--json",
                       "--subject", "system:serviceaccount:agents:x", "--groups", "sre", "--server", "postgres",
                       "--tool", "query", "--args", '{"sql": "DROP TABLE t"}')

    assert code == 0
    document = json.loads(out)
    assert (document["decision"], document["rule"], document["mask"]) == ("require_approval", "destructive-sql", ["pii"])
    assert document["policy_hash"] == PolicyEngine.from_file(policy_file).policy_hash
    assert [(r["id"], r["outcome"]) for r in document["rules"]] == [
        ("sre-read", "matched"), ("destructive-sql", "matched"), ("interns", "not matched"), ("agents-masked", "matched")]


def test_test_exits_one_when_decision_differs_from_expect(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["policy", "test", "--policy", str(policy_file), "--subject", "a", "--groups", "sre",
            "--server", "postgres", "--tool", "query"]

    assert run(capsys, *args, "--expect", "allow")[0] == 0
    assert run(capsys, *args, "--expect", "deny")[0] == 1


def test_test_uses_inline_policy_and_upstream_trust_when_given_a_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text(textwrap.dedent("""
        identity: {resource_url: "https://bastion.example.com", allow_anonymous: true}
        audit: {signing_key_file: /nonexistent.key}
        upstreams:
          github: {url: "https://mcp.example.com/mcp", trusted: true}
        policy:
          default: deny
          rules:
            - {id: read-only, match: {annotations: {readOnlyHint: true}}, action: allow}
    """))
    base = ["policy", "test", "--config", str(config), "--subject", "a", "--tool", "list_issues",
            "--annotations", '{"readOnlyHint": true}']

    code, out, _ = run(capsys, *base, "--server", "github")
    assert code == 0 and "decision: allow" in out and "rule:     read-only" in out
    code, out, _ = run(capsys, *base, "--server", "other")  # not configured, so not trusted
    assert code == 0 and "decision: deny" in out


def test_test_exits_two_when_args_is_not_a_json_object(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "policy", "test", "--policy", str(policy_file), "--subject", "a",
                       "--server", "postgres", "--tool", "query", "--args", "[1, 2]")

    assert code == 2
    assert "--args must be a JSON object" in err


def test_test_exits_two_when_policy_file_is_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(INVALID)

    code, _, err = run(capsys, "policy", "test", "--policy", str(bad), "--subject", "a", "--server", "s", "--tool", "t")
    assert code == 2
    assert "policy.default" in err


def test_check_exits_zero_when_policy_is_valid(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "check", str(policy_file))

    assert code == 0
    assert out.splitlines()[-1] == f"{policy_file}: OK (0 errors, 0 warnings)"


def test_check_lists_every_error_with_its_path_when_policy_is_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(INVALID)

    code, out, _ = run(capsys, "policy", "check", str(bad))

    assert code == 2
    problems = [line for line in out.splitlines() if ": error: " in line]
    wheres = {line.split(": ")[1] for line in problems}
    assert "policy.default" in wheres
    assert any(w.startswith("policy.rules[1](no-action)") for w in wheres)
    assert out.splitlines()[-1].startswith(f"{bad}: invalid (")


def test_check_reports_regex_and_cel_errors_when_shape_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "compile.yaml"
    bad.write_text(INVALID.replace("default: maybe", "default: deny").replace(
        "    - id: no-action\n      match: {tool: query}\n", ""))

    code, out, _ = run(capsys, "policy", "check", str(bad))

    assert code == 2
    wheres = [line.split(": ")[1] for line in out.splitlines() if ": error: " in line]
    assert any(w.startswith("policy.rules[0](bad-regex).match.args.sql") for w in wheres), out
    assert any(w.startswith("policy.rules[1](bad-cel).when") for w in wheres), out


def test_check_warns_but_exits_zero_unless_strict_when_default_is_allow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lax = tmp_path / "lax.yaml"
    lax.write_text("policy:\n  default: allow\n")

    code, out, _ = run(capsys, "policy", "check", str(lax))
    assert code == 0
    assert f"{lax}: policy.default: warning: " in out
    assert run(capsys, "policy", "check", "--strict", str(lax))[0] == 2


def test_check_flags_unknown_mask_profile_when_given_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text(textwrap.dedent("""
        upstreams: {}
        masking:
          profiles:
            hr: {detectors: [email]}
        policy:
          rules:
            - {id: ok, match: {tool: a}, mask: [hr, pii]}
            - {id: typo, match: {tool: b}, mask: [pi]}
    """))

    code, out, _ = run(capsys, "policy", "check", str(config))

    assert code == 2
    errors = [line for line in out.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "policy.rules[1](typo).mask" in errors[0] and "'pi'" in errors[0]


def test_check_exits_two_when_file_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"

    code, out, _ = run(capsys, "policy", "check", str(missing))

    assert code == 2
    assert "cannot read" in out
