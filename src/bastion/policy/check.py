"""What ``bastion policy check FILE`` reports: every error that would stop the policy loading, plus warnings.

Owns collecting problems (YAML, shape, regex and CEL compilation) without stopping at the first,
and the warnings for legal but risky choices. Returns ``Problem``s; the CLI prints and exits.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from bastion.errors import ConfigError
from bastion.policy.rules import compile_rules
from bastion.policy.settings import (
    PolicySettings,
    Problem,
    describe_location,
    parse_policy_text,
    read_policy_file,
    validate_policy,
)


def check_policy_file(path: Path, *, known_profiles: Collection[str] | None = None) -> list[Problem]:
    """Every problem in a policy file; no error-severity problem means it would load."""
    try:
        text = read_policy_file(path)
    except ConfigError as exc:
        return [Problem(str(path), str(exc))]
    return check_policy_text(text, source=str(path), known_profiles=known_profiles)


def check_policy_text(text: str, *, source: str, known_profiles: Collection[str] | None = None) -> list[Problem]:
    """Every problem in a policy file's text; ``known_profiles`` enables the masking-profile check."""
    try:
        data = parse_policy_text(text, source)
    except ConfigError as exc:
        return [Problem(source, str(exc))]
    settings, problems = validate_policy(data)
    if settings is None:
        return problems
    _, problems = compile_rules(settings)
    return problems + _warnings(settings, known_profiles)


def _warnings(settings: PolicySettings, known_profiles: Collection[str] | None) -> list[Problem]:
    raw = settings.model_dump(mode="json", by_alias=True)
    warnings = []
    if settings.default == "allow":
        warnings.append(Problem("policy.default", "default is allow: calls that no rule matches are allowed "
                                "(fail open)", "warning"))
    for index, rule in enumerate(settings.rules):
        where = describe_location(("rules", index), raw)
        if rule.match.annotations is not None and rule.match.server is None:
            warnings.append(Problem(f"{where}.match.annotations",
                                    "annotations are only trusted from upstreams marked trusted; on any other "
                                    "upstream this rule is treated as possibly matching every tool", "warning"))
        if known_profiles is not None:
            for profile in rule.mask:
                if profile not in known_profiles:
                    warnings.append(Problem(f"{where}.mask", f"unknown masking profile {profile!r}"))
        if rule.action == "allow" and not rule.match.model_fields_set and rule.when is None:
            warnings.append(Problem(f"{where}.match", "an allow rule with no match allows every call", "warning"))
    return warnings
