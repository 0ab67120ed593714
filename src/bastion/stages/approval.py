"""``ApprovalStage``: hold a call the policy marked ``require_approval`` until humans decide.

Runs after the policy stage, which sets ``ex.approval_requirement``, ``notes.rule_id`` and
``notes.policy_hash``. Owns the caller's side of one approval: reuse an approved one or a grant,
otherwise request, report progress, wait (bounded by the approval's expiry) and release once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bastion.approval.model import Approval, ApprovalState, CallKey, TransitionError, Verdict
from bastion.approval.service import ApprovalService, CallRequest
from bastion.audit.record import compute_arguments_sha256
from bastion.errors import BastionError, DenialError
from bastion.exchange import Exchange, Reply
from bastion.jsonrpc import codes
from bastion.pipeline.stage import Next
from bastion.policy.model import ApprovalMode, ApprovalRequirement

log = logging.getLogger(__name__)

REASON_META_KEY = "bastion/reason"
"""``params._meta`` key where a caller may state why it makes the call; shown to approvers."""
WITHDRAW_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class ApprovalStageOptions:
    """``grant_s_by_rule``: rules whose approval grants a time-box (seconds) for that subject and tool."""

    grant_s_by_rule: Mapping[str, float] = field(default_factory=dict)


class ApprovalStage:
    """Hold, release once, or refuse calls that need human approval.

    ``display_arguments`` masks arguments for approvers and the log (the binding hashes the raw ones).
    """

    name: ClassVar[str] = "approval"

    def __init__(self, service: ApprovalService, display_arguments: Callable[[dict[str, Any]], Any],
                 options: ApprovalStageOptions = ApprovalStageOptions()) -> None:
        self._service = service
        self._display = display_arguments
        self._options = options

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply | None:
        """Pass through calls without a requirement; otherwise release, hold or refuse.

        Raises:
            DenialError: APPROVAL_PENDING (pending_error mode), APPROVAL_DENIED or APPROVAL_EXPIRED.
            StorageError: the approval cannot be stored or recorded (fail closed).
        """
        requirement = ex.approval_requirement
        if requirement is None:
            return await call_next(ex)
        # 1. An approved, unexecuted approval of exactly this call, or a live grant, releases it now.
        key = self._key(ex)
        release = await self._service.find_release(key)
        if release is not None:
            ex.notes.approval_id = release.approval_id
            return await call_next(ex)
        # 2. pending_error: answer at once; a retry of the identical call reuses the pending approval.
        if requirement.mode is ApprovalMode.PENDING_ERROR:
            approval = await self._service.find_pending(key) or await self._request(ex, key, requirement, held=False)
            ex.notes.approval_id = approval.id
            ex.notes.outcome = "held"
            raise DenialError(f"approval pending, id={approval.id}", code=codes.APPROVAL_PENDING,
                              data={"approval_id": approval.id})
        # 3. hold: request, tell the client, wait until decided or expired, then release once.
        approval = await self._request(ex, key, requirement, held=True)
        ex.notes.approval_id = approval.id
        await self._report_progress(ex, approval)
        final = await self._wait(approval)
        if final.state is ApprovalState.APPROVED:
            try:
                await self._service.consume(final.id)
            except TransitionError as exc:  # expired or executed elsewhere between decision and release
                ex.notes.outcome = "denied"
                raise DenialError(f"approval {final.id} can no longer be used", code=codes.APPROVAL_EXPIRED,
                                  data={"approval_id": final.id}) from exc
            return await call_next(ex)
        ex.notes.outcome = "denied"
        if final.state is ApprovalState.DENIED:
            reason = next((r.reason for r in reversed(final.reviews) if r.verdict is Verdict.DENY and r.reason), None)
            raise DenialError(
                f"approval {final.id} was denied" + (f": {reason}" if reason else ""),
                code=codes.APPROVAL_DENIED,
                data={"approval_id": final.id, **({"reason": reason} if reason else {})},
            )
        raise DenialError(f"approval {final.id} {final.state.value}", code=codes.APPROVAL_EXPIRED,
                          data={"approval_id": final.id})

    def _key(self, ex: Exchange) -> CallKey:
        principal = ex.caller.principal
        return CallKey(principal.subject, principal.issuer, ex.upstream, ex.name or "",
                       compute_arguments_sha256(ex.arguments), ex.notes.policy_hash or "")

    async def _request(self, ex: Exchange, key: CallKey, requirement: ApprovalRequirement, *, held: bool) -> Approval:
        rule_id = ex.notes.rule_id
        call = CallRequest(
            caller=ex.caller.principal, key=key, arguments=self._display(ex.arguments), rule_id=rule_id,
            requirement=requirement, caller_reason=_caller_reason(ex.params),
            grant_s=self._options.grant_s_by_rule.get(rule_id) if rule_id else None,
        )
        return await self._service.request(call, held=held)

    async def _wait(self, approval: Approval) -> Approval:
        """Wait for the decision; a cancelled or vanished client withdraws the approval first."""
        try:
            return await self._service.wait(approval.id, approval.expires_at)
        except asyncio.CancelledError:
            try:
                await asyncio.shield(asyncio.wait_for(self._service.withdraw(approval.id), WITHDRAW_TIMEOUT_S))
            except (BastionError, TimeoutError):  # the cancellation still propagates; expiry closes it later
                log.exception("approval %s: cannot record withdrawal", approval.id)
            raise

    @staticmethod
    async def _report_progress(ex: Exchange, approval: Approval) -> None:
        if ex.progress is None:
            return
        groups = ", ".join(approval.approver_groups) or "any approver"
        try:
            await ex.progress(f"waiting for approval {approval.id} (approvers: {groups})")
        except Exception:  # progress is advisory; a client that cannot take it still gets its answer
            log.warning("approval %s: progress notification failed", approval.id, exc_info=True)


def _caller_reason(params: Mapping[str, Any] | None) -> str | None:
    meta = (params or {}).get("_meta")
    reason = meta.get(REASON_META_KEY) if isinstance(meta, dict) else None
    return reason if isinstance(reason, str) and reason else None
