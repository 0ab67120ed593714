"""``bastion policy test`` and ``bastion policy check``: thin shells over bastion.policy.{explain,check}.

``test`` prints the decision for one call, the deciding rule and, for every rule, whether it
matched and the first condition that failed. ``check`` lists every problem of a policy file with
its path. Exit codes: 0 success (``test`` printed a decision; ``check`` found no error, warnings
allowed), 1 ``test --expect`` got another decision, 2 bad input (unreadable or invalid files, bad
``--args``, a policy that does not load).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import yaml

from bastion.config import load_settings
from bastion.errors import ConfigError
from bastion.masking.settings import BUILTIN_PROFILES
from bastion.policy import (
    Action,
    Explanation,
    Kind,
    PolicyEngine,
    Problem,
    build_test_request,
    check_policy_file,
    check_policy_text,
    explain,
    render_explanation,
)

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2


def register(commands: Any) -> None:
    parser = commands.add_parser("policy", help="test a call against a policy, or check a policy file")
    sub = parser.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser("test", help="print the decision for one call and why each rule did or did not match")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="bastion.yaml: its inline policy or its policy_file, and upstream trust")
    source.add_argument("--policy", help="a policy file (top-level key 'policy:')")
    p.add_argument("--subject", required=True, help="the caller's subject")
    p.add_argument("--groups", default="", help="the caller's groups, comma-separated")
    p.add_argument("--server", required=True, help="the upstream's name")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--tool", help="tool name (tools/call)")
    target.add_argument("--resource", help="resource URI (resources/read)")
    target.add_argument("--prompt", help="prompt name (prompts/get)")
    p.add_argument("--args", default="{}", help="the call's arguments as a JSON object")
    p.add_argument("--annotations", help="the tool's annotations as a JSON object (believed only with trust)")
    p.add_argument("--trusted", action="store_true", help="treat the upstream as trusted (its annotations count)")
    p.add_argument("--expect", choices=[a.value for a in Action], help="exit 1 unless the decision is this")
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    p.set_defaults(run=run_test)

    p = sub.add_parser("check", help="list every problem of a policy file; exit 2 if it would not load")
    p.add_argument("file", help="a policy file, or a bastion.yaml with an inline policy or a policy_file")
    p.add_argument("--strict", action="store_true", help="count warnings as errors")
    p.set_defaults(run=run_check)


# -- test ------------------------------------------------------------------------------------------


def _engine_and_trust(args: argparse.Namespace) -> tuple[PolicyEngine, bool]:
    """The engine named by --config or --policy, and whether the config marks --server trusted.

    Raises:
        ConfigError: the file is unreadable or its policy invalid.
    """
    if args.policy is not None:
        return PolicyEngine.from_file(Path(args.policy)), False
    settings = load_settings(args.config)
    upstream = settings.upstreams.get(args.server)
    trusted = upstream is not None and upstream.trusted
    if settings.policy is not None:
        return PolicyEngine(settings.policy, source=f"{args.config}: policy"), trusted
    return PolicyEngine.from_file(Path(settings.policy_file or "")), trusted  # Settings requires one of the two


def _json_object(text: str | None, option: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{option} must be a JSON object")
    return value


def run_test(args: argparse.Namespace) -> int:
    engine, config_trusted = _engine_and_trust(args)
    if args.tool is not None:
        kind, name = Kind.TOOL, args.tool
    elif args.resource is not None:
        kind, name = Kind.RESOURCE, args.resource
    else:
        kind, name = Kind.PROMPT, args.prompt
    request = build_test_request(
        subject=args.subject,
        groups=[g.strip() for g in args.groups.split(",") if g.strip()],
        server=args.server,
        name=name,
        kind=kind,
        args_json=args.args,
        annotations=_json_object(args.annotations, "--annotations"),
        upstream_trusted=args.trusted or config_trusted,
    )
    explanation = explain(engine, request)
    print(json.dumps(render_json(explanation), indent=2, ensure_ascii=False) if args.json else render_explanation(explanation))
    if args.expect is not None and explanation.decision.action.value != args.expect:
        return EXIT_UNEXPECTED
    return EXIT_OK


def render_json(explanation: Explanation) -> dict[str, Any]:
    """The explanation as the JSON ``policy test --json`` prints."""
    decision = explanation.decision
    return {
        "decision": decision.action.value,
        "rule": decision.rule_id,
        "reason": decision.reason,
        "mask": list(decision.mask_profiles),
        "rate_limits": [{"rule": lim.rule_id, "calls": lim.calls, "per_s": lim.per_s} for lim in decision.rate_limits],
        "policy_hash": decision.policy_hash,
        "rules": [
            {"id": t.rule_id, "outcome": t.outcome.value, "contributes": t.contributes, "detail": t.detail}
            for t in explanation.traces
        ],
    }


# -- check -----------------------------------------------------------------------------------------


def _problems(path: Path) -> tuple[str, list[Problem]]:
    """Problems of a policy file, or of the policy a bastion.yaml holds or names."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return str(path), check_policy_file(path)  # reports the read or YAML error itself
    if not isinstance(document, dict) or set(document) == {"policy"}:
        return str(path), check_policy_file(path)
    profiles = _known_profiles(document.get("masking"))
    if "policy" in document:
        text = yaml.safe_dump({"policy": document["policy"]}, sort_keys=False)
        return str(path), check_policy_text(text, source=str(path), known_profiles=profiles)
    policy_file = document.get("policy_file")
    if isinstance(policy_file, str):
        return policy_file, check_policy_file(Path(policy_file), known_profiles=profiles)
    return str(path), [Problem(str(path), "neither a policy file (top-level 'policy:') nor a config with "
                                          "'policy' or 'policy_file'")]


def _known_profiles(masking: Any) -> Collection[str]:
    custom = masking.get("profiles") if isinstance(masking, dict) else None
    return {*BUILTIN_PROFILES, *(custom if isinstance(custom, dict) else {})}


def render_problems(source: str, problems: Sequence[Problem]) -> str:
    """One line per problem: ``source: where: severity: message``."""
    return "\n".join(f"{source}: {p.where}: {p.severity}: {p.message}" for p in problems)


def run_check(args: argparse.Namespace) -> int:
    source, problems = _problems(Path(args.file))
    errors = [p for p in problems if p.severity == "error" or args.strict]
    if problems:
        print(render_problems(source, problems))
    warnings = len(problems) - sum(p.severity == "error" for p in problems)
    print(f"{source}: {'invalid' if errors else 'OK'} "
          f"({sum(p.severity == 'error' for p in problems)} errors, {warnings} warnings)")
    return EXIT_BAD_INPUT if errors else EXIT_OK
