"""Human approval of risky calls: a persisted state machine, its service, store protocol and notifiers.

The pipeline side is stages/approval.py; the operator side is admin/approvals.py and cli/approvals.py.
"""

from bastion.approval.model import (
    Approval,
    ApprovalState,
    CallKey,
    Grant,
    Review,
    ReviewRefusedError,
    Step,
    TransitionError,
    Verdict,
)
from bastion.approval.notify import Notifier, NotifyError, Retry, SlackNotifier, WebhookNotifier
from bastion.approval.service import ApprovalNotFoundError, ApprovalService, CallRequest, Release
from bastion.approval.store import ApprovalStore

__all__ = [
    "Approval",
    "ApprovalNotFoundError",
    "ApprovalService",
    "ApprovalState",
    "ApprovalStore",
    "CallKey",
    "CallRequest",
    "Grant",
    "Notifier",
    "NotifyError",
    "Release",
    "Retry",
    "Review",
    "ReviewRefusedError",
    "SlackNotifier",
    "Step",
    "TransitionError",
    "Verdict",
    "WebhookNotifier",
]
