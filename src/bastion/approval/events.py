"""Audit events for each approval step: requested, notified, reviewed, executed, closed.

Owns only the mapping from an approval step to an ``AuditEvent`` (kind APPROVAL, ``detail.step``);
appending them is the injected ``record`` coroutine's job, chosen by the app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bastion.approval.model import Approval, ApprovalState, Review, Step
from bastion.audit.record import AuditEvent, EventKind, Outcome

Record = Callable[[AuditEvent], Awaitable[Any]]
"""Appends one audit event durably (e.g. ``AuditLog.append``); raises StorageError when it cannot."""

_OUTCOME: Mapping[ApprovalState, Outcome] = {
    ApprovalState.PENDING: Outcome.HELD,
    ApprovalState.APPROVED: Outcome.APPROVED,
    ApprovalState.DENIED: Outcome.DENIED,
    ApprovalState.EXPIRED: Outcome.EXPIRED,
    ApprovalState.WITHDRAWN: Outcome.CANCELLED,
    ApprovalState.ABANDONED: Outcome.EXPIRED,
    ApprovalState.EXECUTED: Outcome.OK,
}


def approval_event(approval: Approval, step: Step, **detail: Any) -> AuditEvent:
    """Return the record of ``step`` for ``approval``, attributed to the caller."""
    return AuditEvent(
        kind=EventKind.APPROVAL,
        outcome=_OUTCOME[approval.state],
        subject=approval.subject,
        issuer=approval.issuer,
        upstream=approval.server,
        method="tools/call",
        name=approval.tool,
        arguments=approval.arguments,
        arguments_sha256=approval.arguments_sha256,
        rule_id=approval.rule_id,
        action="require_approval",
        policy_hash=approval.policy_hash,
        detail={"step": step.value, "approval_id": approval.id, "state": approval.state.value,
                **{k: v for k, v in detail.items() if v is not None}},
    )


def review_event(approval: Approval, review: Review) -> AuditEvent:
    """Return the record of one review, attributed to the reviewer (who, decision, reason, when)."""
    return AuditEvent(
        kind=EventKind.APPROVAL,
        outcome=_OUTCOME[approval.state],
        subject=review.subject,
        issuer=review.issuer,
        upstream=approval.server,
        method="tools/call",
        name=approval.tool,
        arguments_sha256=approval.arguments_sha256,
        rule_id=approval.rule_id,
        policy_hash=approval.policy_hash,
        detail={
            "step": Step.REVIEWED.value,
            "approval_id": approval.id,
            "state": approval.state.value,
            "caller": approval.subject,
            "verdict": review.verdict.value,
            "reason": review.reason,
            "decided_at": review.decided_at,
            "via": review.via,
        },
    )
