"""The policy engine's vocabulary: request, decision and their enums; no logic here.

Everything the gateway hands to the engine (``PolicyRequest``) and gets back (``Decision``)
is a frozen slotted dataclass so it can be shared between tasks and written to the audit log.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class Action(enum.StrEnum):
    """What the engine decided; ordered from least to most strict by ``STRICTNESS``."""

    ALLOW = "allow"
    REQUIRE_APPROVAL = "require_approval"
    DENY = "deny"


STRICTNESS: Mapping[Action, int] = {Action.ALLOW: 0, Action.REQUIRE_APPROVAL: 1, Action.DENY: 2}
"""Precedence between matching rules: the highest number wins (see docs/policy.md)."""


class Kind(enum.StrEnum):
    """What the request targets: ``tools/*``, ``resources/*``, ``prompts/*`` or any other method."""

    TOOL = "tool"
    RESOURCE = "resource"
    PROMPT = "prompt"
    OTHER = "other"


class ApprovalMode(enum.StrEnum):
    """How the caller waits for approval: the request is held open, or fails with APPROVAL_PENDING."""

    HOLD = "hold"
    PENDING_ERROR = "pending_error"


class Confirm(enum.StrEnum):
    """Who else must confirm an approval-gated call; ``USER`` is the human behind the session."""

    USER = "user"


class RateLimitKey(enum.StrEnum):
    """What a rate limit counts per: the caller, or the caller on one server's tool."""

    SUBJECT = "subject"
    SUBJECT_TOOL = "subject+tool"


class ToolChangeMode(enum.StrEnum):
    """What happens to a tool whose definition changed since it was pinned."""

    HIDE = "hide"
    BLOCK = "block"
    ALLOW = "allow"


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One call as the engine sees it.

    ``annotations`` is None when the gateway does not know the tool's definition (treated as
    untrusted); ``now`` must be timezone-aware.
    """

    subject: str
    groups: frozenset[str]
    server: str
    kind: Kind
    name: str
    args: Mapping[str, Any]
    annotations: Mapping[str, Any] | None
    upstream_trusted: bool
    now: datetime

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("PolicyRequest.now must be timezone-aware")


@dataclass(frozen=True, slots=True)
class ApprovalRequirement:
    """Who must approve and how long they have; empty ``groups`` means any configured approver."""

    groups: tuple[str, ...]
    min_approvals: int
    deny_min: int
    expires_s: float
    mode: ApprovalMode
    confirm: Confirm | None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One limit a call counts against; ``key`` already includes the rule id and the caller."""

    rule_id: str
    key: str
    calls: int
    per_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's answer for one request.

    ``rule_id`` is None when the policy default decided; ``reason`` is safe to show the caller;
    ``approval`` is set iff ``action`` is REQUIRE_APPROVAL.
    """

    action: Action
    rule_id: str | None
    reason: str
    mask_profiles: tuple[str, ...]
    approval: ApprovalRequirement | None
    rate_limits: tuple[RateLimit, ...]
    policy_hash: str
