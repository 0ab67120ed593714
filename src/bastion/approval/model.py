"""The approval state machine: values (``Approval``, ``Review``, ``Grant``) and pure transitions.

pending → approved | denied | expired | withdrawn | abandoned; approved → executed (once).
Every transition here is a pure function that returns a new value or raises ``ReviewRefusedError``
/ ``TransitionError``; persistence, waiting and notification belong to service.py and the stores.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

from bastion.errors import BastionError
from bastion.identity.principal import Principal


class ApprovalState(enum.StrEnum):
    """Where an approval is in its life; everything but PENDING and APPROVED is final."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"
    ABANDONED = "abandoned"
    EXECUTED = "executed"


CLOSING_STATES = frozenset({ApprovalState.EXPIRED, ApprovalState.WITHDRAWN, ApprovalState.ABANDONED})
"""States a pending approval may be closed into without a review."""


class Verdict(enum.StrEnum):
    """One reviewer's decision."""

    APPROVE = "approve"
    DENY = "deny"


class Step(enum.StrEnum):
    """The ``detail.step`` of an approval audit record."""

    REQUESTED = "requested"
    NOTIFIED = "notified"
    REVIEWED = "reviewed"
    EXECUTED = "executed"
    GRANT_USED = "grant_used"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"
    ABANDONED = "abandoned"


class TransitionError(BastionError):
    """Raised when a transition is not allowed from the approval's current state."""


class ReviewRefusedError(BastionError):
    """Raised when a reviewer may not decide this approval (own call, not an approver, already voted, closed)."""


@dataclass(frozen=True, slots=True)
class CallKey:
    """What an approval binds to: the caller, the tool, the exact arguments' hash and the policy hash."""

    subject: str
    issuer: str
    server: str
    tool: str
    arguments_sha256: str
    policy_hash: str


@dataclass(frozen=True, slots=True)
class Review:
    """One reviewer's vote; ``via`` says which surface carried it (``api`` or ``cli``)."""

    subject: str
    issuer: str
    verdict: Verdict
    reason: str | None
    decided_at: float
    via: str


@dataclass(frozen=True, slots=True)
class Approval:
    """One held (or pending-error) call awaiting humans; times are POSIX seconds.

    ``arguments`` is the masked display copy; ``arguments_sha256`` binds the exact arguments.
    ``version`` increments on every stored change (optimistic concurrency between instances).
    ``holder``/``run_id`` name the gateway run holding the call; ``held`` is False in pending_error mode.
    """

    id: str
    subject: str
    issuer: str
    server: str
    tool: str
    arguments: Any
    arguments_sha256: str
    rule_id: str | None
    policy_hash: str
    caller_reason: str | None
    approver_groups: tuple[str, ...]
    min_approvals: int
    deny_min: int
    created_at: float
    expires_at: float
    held: bool
    holder: str
    run_id: str
    grant_s: float | None = None
    state: ApprovalState = ApprovalState.PENDING
    reviews: tuple[Review, ...] = ()
    closed_at: float | None = None
    executed_at: float | None = None
    version: int = 0

    def count(self, verdict: Verdict) -> int:
        """Return how many reviews carry ``verdict``."""
        return sum(1 for r in self.reviews if r.verdict is verdict)

    @property
    def key(self) -> CallKey:
        """The exact call this approval binds to."""
        return CallKey(self.subject, self.issuer, self.server, self.tool, self.arguments_sha256, self.policy_hash)


@dataclass(frozen=True, slots=True)
class Grant:
    """A time-box: ``subject`` may call ``server``/``tool`` under ``policy_hash`` until ``expires_at``."""

    id: str
    approval_id: str
    subject: str
    issuer: str
    server: str
    tool: str
    policy_hash: str
    created_at: float
    expires_at: float

    def covers(self, key: CallKey, now: float) -> bool:
        """Return True when the grant is live at ``now`` and covers ``key`` (arguments are free)."""
        mine = (self.subject, self.issuer, self.server, self.tool, self.policy_hash)
        return mine == (key.subject, key.issuer, key.server, key.tool, key.policy_hash) and now < self.expires_at


def may_review(approval: Approval, reviewer: Principal, default_groups: frozenset[str]) -> None:
    """Check that ``reviewer`` may vote on ``approval`` at all.

    The rule's groups decide; when the rule names none, ``default_groups`` do; when both are
    empty nobody may approve (fail closed).
    Raises:
        ReviewRefusedError: the reviewer is the caller, is in no approver group, or already voted.
    """
    if (reviewer.subject, reviewer.issuer) == (approval.subject, approval.issuer):
        raise ReviewRefusedError("an approver cannot decide their own call")
    groups = frozenset(approval.approver_groups) or default_groups
    if not groups & reviewer.groups:
        raise ReviewRefusedError(f"{reviewer.subject!r} is not in an approver group of this rule")
    if any((r.subject, r.issuer) == (reviewer.subject, reviewer.issuer) for r in approval.reviews):
        raise ReviewRefusedError(f"{reviewer.subject!r} already reviewed this approval")


def apply_review(approval: Approval, review: Review, now: float) -> Approval:
    """Return the approval with ``review`` added and the thresholds applied.

    Any ``deny_min`` denies reject; ``min_approvals`` approvals approve; otherwise it stays pending.
    Preconditions: ``may_review`` passed for the reviewer.
    Raises:
        ReviewRefusedError: the approval is no longer pending or its deadline has passed.
    """
    if approval.state is not ApprovalState.PENDING:
        raise ReviewRefusedError(f"approval {approval.id} is {approval.state.value}, not pending")
    if now >= approval.expires_at:
        raise ReviewRefusedError(f"approval {approval.id} has expired")
    reviewed = dataclasses.replace(approval, reviews=(*approval.reviews, review))
    if reviewed.count(Verdict.DENY) >= approval.deny_min:
        return dataclasses.replace(reviewed, state=ApprovalState.DENIED, closed_at=now)
    if reviewed.count(Verdict.APPROVE) >= approval.min_approvals:
        return dataclasses.replace(reviewed, state=ApprovalState.APPROVED, closed_at=now)
    return reviewed


def close(approval: Approval, state: ApprovalState, now: float) -> Approval:
    """Return the pending approval closed as expired, withdrawn or abandoned.

    Raises:
        TransitionError: ``state`` is not a closing state or the approval is not pending.
    """
    if state not in CLOSING_STATES:
        raise TransitionError(f"{state.value} is not a closing state")
    if approval.state is not ApprovalState.PENDING:
        raise TransitionError(f"approval {approval.id} is {approval.state.value}, not pending")
    return dataclasses.replace(approval, state=state, closed_at=now)


def execute(approval: Approval, now: float) -> Approval:
    """Return the approved approval marked executed; an approval executes at most once.

    Raises:
        TransitionError: the approval is not approved (already executed, denied, ...) or has expired.
    """
    if approval.state is not ApprovalState.APPROVED:
        raise TransitionError(f"approval {approval.id} is {approval.state.value}, not approved")
    if now >= approval.expires_at:
        raise TransitionError(f"approval {approval.id} has expired")
    return dataclasses.replace(approval, state=ApprovalState.EXECUTED, executed_at=now)


def is_usable(approval: Approval, now: float) -> bool:
    """Return True when an approval may still release its call (approved, unexecuted, not expired)."""
    return approval.state is ApprovalState.APPROVED and now < approval.expires_at
