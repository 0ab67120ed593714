"""``UserConfirmationStage``: ask the caller's own user, in band, before a ``confirm: user`` call.

Runs between the policy stage (which sets ``ex.approval_requirement``) and the approval stage, so
the user answers first and a declined call never reaches approvers. Owns the ``elicitation/create``
question (MCP 2025-06-18 §client/elicitation, form mode), reading the answer and its audit record.
This is the user confirming their own agent's call, not four-eyes approval: that stays with
``ApprovalStage`` and the approver groups.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from bastion.approval.events import Record
from bastion.audit.record import AuditEvent, EventKind, Outcome, compute_arguments_sha256
from bastion.errors import BastionError, DenialError, UpstreamError
from bastion.exchange import AskClient, CallerContext, Exchange, Reply
from bastion.jsonrpc import codes
from bastion.pipeline.stage import Next
from bastion.policy.model import Confirm
from bastion.stages.audit import who

log = logging.getLogger(__name__)

STEP = "user_confirmation"
"""``detail.step`` of the approval-kind audit record of one confirmation."""
ELICIT_METHOD = "elicitation/create"
PRE_ELICITATION_VERSIONS = frozenset({"2024-11-05", "2025-03-26"})
"""Protocol revisions without elicitation (it arrived in 2025-06-18)."""
CONFIRM_FIELD = "confirm"
REQUESTED_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {CONFIRM_FIELD: {"type": "boolean", "title": "Allow this call?"}},
    "required": [CONFIRM_FIELD],
}
MAX_SHOWN_ARGUMENTS_CHARS = 2000
RECORD_WITHDRAWN_TIMEOUT_S = 5.0


class Confirmation(enum.StrEnum):
    """How one confirmation ended (``data.confirmation`` on the wire, ``detail.confirmation`` in the log)."""

    ACCEPTED = "accepted"
    DECLINED = "declined"
    """The user declined, or accepted with ``confirm: false``."""
    CANCELLED = "cancelled"
    """The user dismissed the question without deciding."""
    TIMEOUT = "timeout"
    UNSUPPORTED = "unsupported"
    """The client cannot be asked: no form-mode elicitation capability (or no session to ask over)."""
    INVALID = "invalid"
    """The client answered with an error or with something that is not an elicitation result."""
    WITHDRAWN = "withdrawn"
    """The caller cancelled its call (or went away) while the question was open; recorded only."""


_OUTCOME: Mapping[Confirmation, Outcome] = {
    Confirmation.ACCEPTED: Outcome.APPROVED,
    Confirmation.DECLINED: Outcome.DENIED,
    Confirmation.CANCELLED: Outcome.CANCELLED,
    Confirmation.TIMEOUT: Outcome.EXPIRED,
    Confirmation.UNSUPPORTED: Outcome.DENIED,
    Confirmation.INVALID: Outcome.DENIED,
    Confirmation.WITHDRAWN: Outcome.CANCELLED,
}

_REFUSAL: Mapping[Confirmation, str] = {
    Confirmation.DECLINED: "the user declined this call",
    Confirmation.CANCELLED: "the user cancelled the confirmation of this call",
    Confirmation.TIMEOUT: "the user did not confirm this call in time",
    Confirmation.UNSUPPORTED: "this call needs the user's confirmation, but the client does not support "
                              "MCP elicitation (form mode)",
    Confirmation.INVALID: "the client's answer to the confirmation was not a valid elicitation result",
}


@dataclass(frozen=True, slots=True)
class UserConfirmationOptions:
    """``timeout_s`` bounds the wait for the user's answer (never beyond the rule's ``expires_s``)."""

    timeout_s: float = 120.0


class UserConfirmationStage:
    """Ask the user behind the session to confirm a call whose rule says ``confirm: user``.

    ``record`` appends audit events (the approval service's path); ``display_arguments`` masks the
    arguments shown to the user and kept in the log.
    """

    name: ClassVar[str] = "user_confirmation"

    def __init__(self, record: Record, display_arguments: Callable[[dict[str, Any]], Any],
                 options: UserConfirmationOptions = UserConfirmationOptions()) -> None:
        self._record = record
        self._display = display_arguments
        self._options = options

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply | None:
        """Pass through calls without ``confirm: user``; otherwise ask, record, then continue or refuse.

        Raises:
            DenialError: APPROVAL_DENIED with ``data.confirmation`` unless the user accepted.
            StorageError: the confirmation cannot be recorded (fail closed: the call does not run).
        """
        requirement = ex.approval_requirement
        if requirement is None or requirement.confirm is not Confirm.USER:
            return await call_next(ex)
        shown = self._display(ex.arguments)
        # 1. Ask only a client that declared form-mode elicitation; anything else fails closed.
        ask = ex.ask_client
        if ask is None or not supports_form_elicitation(ex.caller):
            answer, client_action = Confirmation.UNSUPPORTED, None
        else:
            # 2. Ask, bounded by our own deadline and the rule's expiry; a cancelled call is recorded.
            timeout_s = min(self._options.timeout_s, requirement.expires_s)
            try:
                answer, client_action = await self._ask(ask, ex, shown, timeout_s)
            except asyncio.CancelledError:
                await self._record_withdrawn(ex, shown)
                raise
        # 3. The record is durable before the call may go on (StorageError propagates: fail closed).
        await self._record(self._event(ex, shown, answer, client_action))
        if answer is Confirmation.ACCEPTED:
            return await call_next(ex)
        ex.notes.outcome = "denied"
        raise DenialError(_REFUSAL[answer], code=codes.APPROVAL_DENIED, data={"confirmation": answer.value})

    @staticmethod
    async def _ask(ask: AskClient, ex: Exchange, shown: Any, timeout_s: float) -> tuple[Confirmation, str | None]:
        params = {"message": render_message(ex, shown), "requestedSchema": dict(REQUESTED_SCHEMA)}
        try:
            async with asyncio.timeout(timeout_s):
                reply = await ask(ELICIT_METHOD, params)
        except TimeoutError:
            return Confirmation.TIMEOUT, None
        except UpstreamError as exc:  # the session's own bound on client answers
            if exc.code == codes.UPSTREAM_TIMEOUT:
                return Confirmation.TIMEOUT, None
            raise
        return read_answer(reply)

    async def _record_withdrawn(self, ex: Exchange, shown: Any) -> None:
        try:
            await asyncio.shield(asyncio.wait_for(self._record(self._event(ex, shown, Confirmation.WITHDRAWN, None)),
                                                  RECORD_WITHDRAWN_TIMEOUT_S))
        except (BastionError, TimeoutError):  # the cancellation still propagates; the call never ran
            log.exception("user confirmation of %s: cannot record withdrawal", ex.name)

    @staticmethod
    def _event(ex: Exchange, shown: Any, answer: Confirmation, client_action: str | None) -> AuditEvent:
        return AuditEvent(
            kind=EventKind.APPROVAL,
            outcome=_OUTCOME[answer],
            upstream=ex.upstream,
            method=ex.method,
            name=ex.name,
            arguments=shown,
            arguments_sha256=compute_arguments_sha256(ex.arguments),
            jsonrpc_id=ex.id,
            traceparent=ex.traceparent,
            request_seq=ex.notes.request_seq,
            rule_id=ex.notes.rule_id,
            action="require_approval",
            policy_hash=ex.notes.policy_hash,
            detail={"step": STEP, "confirmation": answer.value,
                    **({"client_action": client_action} if client_action is not None else {})},
            **who(ex.caller),
        )


def supports_form_elicitation(caller: CallerContext) -> bool:
    """True when the client declared elicitation that includes form mode on a revision that has it.

    MCP 2025-11-25 §client/elicitation: an empty ``elicitation`` object means form mode only; a
    client may instead list ``form`` and/or ``url`` (URL-only clients cannot answer a form).
    """
    if caller.protocol_version in PRE_ELICITATION_VERSIONS:
        return False
    capability = (caller.client_capabilities or {}).get("elicitation")
    return isinstance(capability, dict) and (not capability or "form" in capability)


def render_message(ex: Exchange, shown: Any) -> str:
    """The question shown to the user: tool, server and the (masked) arguments."""
    arguments = orjson.dumps(shown, option=orjson.OPT_SORT_KEYS).decode()
    if len(arguments) > MAX_SHOWN_ARGUMENTS_CHARS:
        arguments = arguments[:MAX_SHOWN_ARGUMENTS_CHARS] + "…"
    tool = ex.shown_name or ex.name or ex.method
    return (f"Bastion asks you to confirm a call your client wants to make: tool {tool!r} on server "
            f"{ex.upstream!r} with arguments {arguments}. Allow it?")


def read_answer(reply: Reply) -> tuple[Confirmation, str | None]:
    """Map the client's reply body to a confirmation; only ``accept`` with ``confirm: true`` accepts."""
    result = reply.get("result")
    if not isinstance(result, dict):
        return Confirmation.INVALID, None
    action = result.get("action")
    if action == "accept":
        content = result.get("content")
        confirmed = isinstance(content, dict) and content.get(CONFIRM_FIELD) is True
        return (Confirmation.ACCEPTED if confirmed else Confirmation.DECLINED), action
    if action == "decline":
        return Confirmation.DECLINED, action
    if action == "cancel":
        return Confirmation.CANCELLED, action
    return Confirmation.INVALID, None
