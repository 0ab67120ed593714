"""The policy's configuration shape: frozen pydantic models and their load-time checks.

Owns parsing a ``policy:`` mapping (inline in bastion.yaml or in its own ``policy_file``) into
``PolicySettings`` and turning validation failures into ``ConfigError`` with exact paths.
Regexes and CEL are compiled later, by ``policy/rules.py``, which reports in the same format.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidationError,
    model_serializer,
    model_validator,
)

from bastion.errors import ConfigError

_MODEL = ConfigDict(extra="forbid", frozen=True, strict=True)
_HOURS = re.compile(r"^(?:[01]\d|2[0-3]):[0-5]\d-(?:(?:[01]\d|2[0-3]):[0-5]\d|24:00)$")


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _one_or_many(value: Any) -> Any:
    return (value,) if isinstance(value, str) else _as_tuple(value)


Text = Annotated[str, StringConstraints(min_length=1)]
Patterns = Annotated[tuple[Text, ...], BeforeValidator(_one_or_many), Field(min_length=1)]
"""One glob or a list of globs (any-of); ``*`` matches any run of characters, ``?`` one."""
Names = Annotated[tuple[Text, ...], BeforeValidator(_one_or_many), Field(min_length=1)]
Number = StrictInt | StrictFloat
Scalar = StrictBool | StrictInt | StrictFloat | str | None
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names in ``datetime.weekday()`` order."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a policy: where (``policy.rules[2].match.args``) and what."""

    where: str
    message: str
    severity: Literal["error", "warning"] = "error"


class ArgCondition(BaseModel):
    """Tests on one argument path; every operator given must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=False)

    eq: JsonValue = None
    regex: Text | None = None
    in_: Annotated[tuple[JsonValue, ...], BeforeValidator(_as_tuple)] | None = Field(None, alias="in")
    lt: Number | None = None
    le: Number | None = None
    gt: Number | None = None
    ge: Number | None = None
    exists: StrictBool | None = None

    @model_validator(mode="after")
    def _one_operator_at_least(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("an argument condition needs at least one of eq, regex, in, lt, le, gt, ge, exists")
        if self.exists is False and len(self.model_fields_set) > 1:
            raise ValueError("exists: false cannot be combined with other operators")
        return self

    @model_serializer(mode="wrap")
    def _only_given(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        dumped: dict[str, Any] = handler(self)
        given = {"in" if name == "in_" else name for name in self.model_fields_set}
        return {key: value for key, value in dumped.items() if key in given}


class TimeWindow(BaseModel):
    """When a rule applies: local weekday in ``days`` and local time in one of ``hours`` (end exclusive)."""

    model_config = _MODEL

    tz: Text = "UTC"
    days: Annotated[tuple[Day, ...], BeforeValidator(_as_tuple), Field(min_length=1)] = DAYS
    hours: Annotated[tuple[Text, ...], BeforeValidator(_one_or_many)] = ("00:00-24:00",)

    @model_validator(mode="after")
    def _check(self) -> Self:
        try:
            zoneinfo.ZoneInfo(self.tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.tz!r}") from None
        for span in self.hours:
            if not _HOURS.match(span) or span[:5] == span[6:]:
                raise ValueError(f"hours entry {span!r} is not 'HH:MM-HH:MM' with distinct ends")
        return self


class MatchSettings(BaseModel):
    """The shape a request must have; every field given must match, an absent field matches all."""

    model_config = _MODEL

    subject: Patterns | None = None
    groups: Names | None = None
    server: Patterns | None = None
    tool: Patterns | None = None
    resource: Patterns | None = None
    prompt: Patterns | None = None
    args: dict[Text, ArgCondition] | None = None
    annotations: dict[Text, Scalar] | None = None
    time: TimeWindow | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        targets = [name for name in ("tool", "resource", "prompt") if getattr(self, name) is not None]
        if len(targets) > 1:
            raise ValueError(f"a rule matches one kind of target; got {' and '.join(targets)}")
        if self.annotations is not None and targets and targets != ["tool"]:
            raise ValueError("annotations exist only on tools; they cannot be matched with resource or prompt")
        for path in self.args or {}:
            if "" in path.split("."):
                raise ValueError(f"argument path {path!r} has an empty segment")
        return self


class ApproverSettings(BaseModel):
    """Who may decide an approval: members of ``groups`` (any approver when empty)."""

    model_config = _MODEL

    groups: Annotated[tuple[Text, ...], BeforeValidator(_one_or_many)] = ()
    min: StrictInt = Field(1, ge=1)
    deny_min: StrictInt = Field(1, ge=1)


class RateLimitSettings(BaseModel):
    """At most ``calls`` calls per ``per_s`` seconds, counted per ``key``."""

    model_config = _MODEL

    calls: StrictInt = Field(ge=1)
    per_s: Number = Field(gt=0)
    key: Literal["subject", "subject+tool"] = "subject"


_APPROVAL_FIELDS = ("approvers", "expires_s", "mode", "confirm")


class RuleSettings(BaseModel):
    """One rule: a match (plus optional CEL ``when``) and what it contributes when it matches."""

    model_config = _MODEL

    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
    description: str | None = None
    match: MatchSettings = MatchSettings()
    when: Text | None = None
    action: Literal["allow", "deny", "require_approval"] | None = None
    reason: Text | None = None
    approvers: ApproverSettings | None = None
    expires_s: Number | None = Field(None, gt=0)
    mode: Literal["hold", "pending_error"] | None = None
    confirm: Literal["user"] | None = None
    mask: Annotated[tuple[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]+$")], ...],
                    BeforeValidator(_one_or_many)] = ()
    rate_limit: RateLimitSettings | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.action is None and not self.mask and self.rate_limit is None:
            raise ValueError("a rule needs an action, a mask or a rate_limit")
        approval_only = [name for name in _APPROVAL_FIELDS if getattr(self, name) is not None]
        if approval_only and self.action != "require_approval":
            raise ValueError(f"{', '.join(approval_only)} only apply to action: require_approval")
        if self.reason is not None and self.action is None:
            raise ValueError("reason needs an action")
        return self


class PolicySettings(BaseModel):
    """The whole policy: the default for unmatched calls, the rules, and the tool-pinning mode."""

    model_config = _MODEL

    default: Literal["deny", "allow"] = "deny"
    on_tool_change: Literal["hide", "block", "allow"] = "block"
    approval_expires_s: Number = Field(300, gt=0)
    """Default ``expires_s`` for approval rules that do not set one."""
    rules: Annotated[tuple[RuleSettings, ...], BeforeValidator(_as_tuple)] = ()

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice")
            seen.add(rule.id)
        return self


def describe_location(loc: tuple[int | str, ...], data: Any, root: str = "policy") -> str:
    """Render a pydantic error location as ``policy.rules[1](id).match.args``; rule ids help humans."""
    parts = [root]
    node = data
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
            node = node[item] if isinstance(node, list | tuple) and item < len(node) else None
            if isinstance(node, Mapping) and isinstance(node.get("id"), str):
                parts[-1] += f"({node['id']})"
        elif isinstance(node, Mapping) or node is data:
            parts.append(item)
            node = node.get(item) if isinstance(node, Mapping) else None
        # any other string names a union branch pydantic tried ("int", "float"): not a place in the file
    return ".".join(parts)


def validate_policy(data: Any) -> tuple[PolicySettings | None, list[Problem]]:
    """Validate a ``policy:`` mapping; returns the settings, or None and every problem found."""
    try:
        return PolicySettings.model_validate(data), []
    except ValidationError as exc:
        messages: dict[str, list[str]] = {}
        for error in exc.errors(include_url=False):
            found = messages.setdefault(describe_location(tuple(error["loc"]), data), [])
            message = error["msg"].removeprefix("Value error, ")
            if message not in found:
                found.append(message)
        return None, [Problem(where, "; or ".join(found)) for where, found in messages.items()]


def parse_policy_text(text: str, source: str) -> Any:
    """Parse a policy file's YAML and return the mapping under its top-level ``policy:`` key.

    Raises:
        ConfigError: the text is not YAML or has no ``policy:`` mapping.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(document, Mapping) or set(document) != {"policy"}:
        raise ConfigError(f"{source}: a policy file holds exactly one top-level key, 'policy'")
    return document["policy"]


def problems_error(source: str, problems: list[Problem]) -> ConfigError:
    """One ConfigError listing every problem; ``data['problems']`` keeps them structured."""
    lines = "\n".join(f"  {p.where}: {p.message}" for p in problems)
    return ConfigError(f"{source}: invalid policy\n{lines}",
                       data={"problems": [{"where": p.where, "message": p.message} for p in problems]})


def read_policy_file(path: Path) -> str:
    """Read a policy file as text.

    Raises:
        ConfigError: the file cannot be read or is not UTF-8.
    """
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read policy file: {exc}") from exc
