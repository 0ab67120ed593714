"""AuditStage: nothing passes without a durable record, and nothing is released without one.

On the way in it appends the request record (arguments masked for the log) and waits until it is
durable before any later stage runs; on the way out it appends what is released — result, error,
denial — and waits again before the reply leaves. A store failure refuses the call (fail closed), and
so does a payload that has no record form (too deep to mask, integers beyond ±2^53).
Notifications are recorded too, progress included: a progress message is free text from the
upstream and reaches the model like any result. A request whose task is cancelled (the client's
``notifications/cancelled``, or its session closing) gets a response record with the outcome
``cancelled``. With a Sealer (audit.seal_raw), the unmasked arguments and result also go into their
records, encrypted for the auditors' keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable
from typing import Any, ClassVar, TypeVar

import orjson

from bastion.audit.canonical import CanonicalEncodingError
from bastion.audit.log import AuditLog
from bastion.audit.record import AuditEvent, EventKind, Outcome, compute_arguments_sha256
from bastion.audit.sealing import SealedField, SealedValue, Sealer
from bastion.errors import StorageError
from bastion.exchange import CallerContext, Direction, Exchange, Kind, Reply
from bastion.jsonrpc import codes
from bastion.jsonrpc.envelope import error_body
from bastion.masking.errors import MaskingError
from bastion.masking.masker import Masker
from bastion.pipeline.stage import Next

log = logging.getLogger(__name__)
T = TypeVar("T")

CANCELLED_RECORD_WAIT_S = 5.0
"""How long a cancelled call waits for its ``cancelled`` record; past that the record still
commits, but the session closing or the gateway stopping need not wait for a hung store."""


def who(caller: CallerContext) -> dict[str, Any]:
    """The identity fields of an audit event."""
    principal = caller.principal
    return {
        "subject": principal.subject,
        "issuer": principal.issuer,
        "auth_method": principal.method.value,
        "groups": tuple(sorted(principal.groups)),
        "client_id": principal.client_id,
        "client_info": caller.client_info,
        "source_address": caller.source_address,
        "user_agent": caller.user_agent,
        "endpoint": caller.endpoint,
        "session_id": caller.session_id,
    }


class AuditStage:
    """Outermost stage: records every exchange before and after the rest of the pipeline."""

    name: ClassVar[str] = "audit"

    def __init__(self, log: AuditLog, log_masker: Masker, sealer: Sealer | None = None) -> None:
        self._log = log
        self._masker = log_masker
        self._sealer = sealer

    @staticmethod
    def _raw_payload(ex: Exchange) -> Any:
        if ex.params is None:
            return None
        return ex.arguments if ex.method == "tools/call" else {k: v for k, v in ex.params.items() if k != "_meta"}

    def _seal(self, ex: Exchange, field: SealedField, raw: Any) -> SealedValue | None:
        if self._sealer is None or raw is None:
            return None
        return self._sealer.seal_value(field, raw, upstream=ex.upstream, method=ex.method, name=ex.name)

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply | None:
        base = {
            **who(ex.caller),
            "upstream": ex.upstream,
            "method": ex.method,
            "name": ex.name,
            "jsonrpc_id": ex.id,
            "traceparent": ex.traceparent,
        }
        kind = EventKind.NOTIFICATION if ex.kind is Kind.NOTIFICATION else EventKind.REQUEST
        if ex.method == "notifications/cancelled":
            kind = EventKind.CANCELLED
        detail = {"direction": ex.direction.value} if ex.direction is Direction.TO_CLIENT else None
        raw = self._raw_payload(ex)
        try:
            sealed = self._seal(ex, SealedField.ARGUMENTS, raw)
            request_record = await self._log.enqueue(
                AuditEvent(
                    kind=kind,
                    arguments=self._masker.mask_json(raw).value if raw is not None else None,
                    arguments_sha256=sealed.sha256 if sealed else _arguments_digest(raw),
                    sealed={SealedField.ARGUMENTS.value: sealed.envelope} if sealed else None,
                    detail=detail,
                    **base,
                )
            )
            receipt = await self._closing_if_cancelled(request_record, ex, base, detail)
        except StorageError as exc:
            return {"error": error_body(exc.code, exc.public_message)} if ex.kind is Kind.REQUEST else None
        except (MaskingError, CanonicalEncodingError) as exc:
            # The arguments have no record form: what cannot be recorded is not forwarded.
            event = AuditEvent(kind=kind, outcome=Outcome.DENIED, detail=_unrecordable("arguments", exc, detail), **base)
            refusal = error_body(codes.INVALID_PARAMS, "The arguments cannot be recorded, so the request was not forwarded")
            return await self._append_refusal(event, refusal) if ex.kind is Kind.REQUEST else None
        ex.notes.request_seq = receipt.seq
        reply = await self._closing_if_cancelled(call_next(ex), ex, base, detail)
        if ex.kind is Kind.NOTIFICATION or reply is None:
            return reply
        return await self._record_reply(ex, reply, base, detail)

    async def _closing_if_cancelled(self, step: Awaitable[T], ex: Exchange, base: dict[str, Any], detail: Any) -> T:
        """Await ``step``; if the call is cancelled meanwhile, its request record (queued, so it
        commits) gets its closing ``cancelled`` record first."""
        try:
            return await step
        except asyncio.CancelledError:
            if ex.kind is Kind.REQUEST:
                await self._record_cancelled(ex, base, detail)
            raise

    async def _record_cancelled(self, ex: Exchange, base: dict[str, Any], detail: Any) -> None:
        """Close a cancelled request's record pair; nothing is released, so a store failure is only logged.

        The append runs as a task of its own: a second cancellation of this call cannot withdraw
        the record, and waiting for it is bounded.
        """
        event = self._response_event(ex, base, detail, Outcome.CANCELLED.value, None, None, None, None)
        appended = asyncio.ensure_future(self._log.append(event))
        appended.add_done_callback(_report_unrecorded_cancellation)
        await asyncio.wait([appended], timeout=CANCELLED_RECORD_WAIT_S)  # neither cancels nor raises for it

    async def _record_reply(self, ex: Exchange, reply: Reply, base: dict[str, Any], detail: Any) -> Reply:
        notes = ex.notes
        result = reply.get("result")
        error = reply.get("error")
        flag = result.get("isError") if isinstance(result, dict) and ex.method == "tools/call" else None
        is_error = flag if isinstance(flag, bool) else None  # the record's is_error is a boolean or absent
        outcome = notes.outcome or ("error" if error is not None or is_error else "ok")
        try:
            if result is None or notes.result_masked:
                released = result  # already masked for release with a superset of the log's profiles
            else:
                released = self._masker.mask_json(result).value
                if notes.raw_result_sha256 is None:
                    notes.raw_result_sha256 = raw_sha256(result)  # unmasked so far: the result as received
            # The masking stage leaves the unmasked result only where it changed it; elsewhere it is the reply's.
            sealed = self._seal(ex, SealedField.RESULT, notes.raw_result if notes.raw_result is not None else result)
            event = self._response_event(ex, base, detail, outcome, released, sealed, is_error, error)
            await self._log.append(event)
        except StorageError as exc:
            return {"error": error_body(exc.code, exc.public_message)}
        except (MaskingError, CanonicalEncodingError) as exc:
            # The result has no record form: what cannot be recorded is not released.
            refusal = error_body(codes.MASKING_FAILED, "The result cannot be recorded, so it was not released")
            refused = self._response_event(ex, base, _unrecordable("result", exc, detail), "error", None, None, None, refusal)
            return await self._append_refusal(refused, refusal)
        return reply

    def _response_event(
        self, ex: Exchange, base: dict[str, Any], detail: Any, outcome: str, released: Any,
        sealed: SealedValue | None, is_error: bool | None, error: Any,
    ) -> AuditEvent:
        notes = ex.notes
        return AuditEvent(
            kind=EventKind.RESPONSE,
            outcome=Outcome(outcome),
            result=released,
            result_sha256=notes.raw_result_sha256 or (sealed.sha256 if sealed else None),
            is_error=is_error,
            error=error,
            latency_ms=round((time.monotonic() - ex.started_at) * 1000, 3),
            request_seq=notes.request_seq,
            rule_id=notes.rule_id,
            action=notes.action,
            policy_hash=notes.policy_hash,
            reason=notes.reason,
            masking={"profiles": list(notes.mask_profiles), "findings": notes.masking} if notes.masking else None,
            detail={**(detail or {}), "approval_id": notes.approval_id} if notes.approval_id else detail,
            sealed={SealedField.RESULT.value: sealed.envelope} if sealed else None,
            **base,
        )

    async def _append_refusal(self, event: AuditEvent, refusal: dict[str, Any]) -> Reply:
        try:
            await self._log.append(event)
        except StorageError as exc:
            return {"error": error_body(exc.code, exc.public_message)}
        return {"error": refusal}


def _arguments_digest(raw: Any) -> str | None:
    """``arguments_sha256`` of a payload; None when it has none, or no canonical form (the masking
    of the same payload then refuses the request with the reason)."""
    if raw is None:
        return None
    try:
        return compute_arguments_sha256(raw)
    except CanonicalEncodingError:
        return None


def _report_unrecorded_cancellation(appended: asyncio.Future[Any]) -> None:
    if not appended.cancelled() and (exc := appended.exception()) is not None:
        log.error("a cancelled request's record could not be written: %s", exc)


def _unrecordable(part: str, exc: MaskingError | CanonicalEncodingError, detail: Any) -> dict[str, Any]:
    """Why ``part`` is missing from its record: too deep to mask, or no RFC 8785 form (integers beyond ±2^53)."""
    reason = exc.data.get("reason") if isinstance(exc, MaskingError) else "no canonical JSON form"
    return {**(detail or {}), "unrecordable": {"part": part, "reason": reason or "cannot be masked"}}


def raw_sha256(result: Any) -> str:
    """SHA-256 of a result as Bastion received it, before any masking, as compact JSON (the bytes
    ``audit.seal_raw`` seals, so an auditor who unseals them can check the digest).

    Raises:
        CanonicalEncodingError: the result is nested deeper than the JSON encoder goes.
    """
    try:
        return hashlib.sha256(orjson.dumps(result)).hexdigest()
    except orjson.JSONEncodeError as exc:
        raise CanonicalEncodingError(f"not encodable as JSON: {exc}") from exc


class GatewayRecorder:
    """Records what happens outside any exchange: refusals at the HTTP plane, requests answered
    before routing, sessions opening and closing, the gateway starting, stopping and reloading."""

    def __init__(self, log: AuditLog, masker: Masker) -> None:
        self.log = log
        self._masker = masker

    async def refusal(self, caller: CallerContext, reason: str, detail: dict[str, Any], identified: bool) -> None:
        """Record a request refused at the HTTP plane; an unidentified caller is recorded without
        any identity (not as "anonymous", which is a real, configured kind of caller)."""
        fields = who(caller)
        if not identified:
            fields.update(subject=None, issuer=None, auth_method=None, groups=(), client_id=None)
        await self.log.append(
            AuditEvent(
                kind=EventKind.REQUEST,
                outcome=Outcome.DENIED,
                detail={"reason": self._masker.mask_text(reason).value, **detail},
                **fields,
            )
        )

    async def unrouted(self, caller: CallerContext, message: dict[str, Any], reply: Reply) -> None:
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        name = params.get("name") or params.get("uri")
        fields = {
            "kind": EventKind.RESPONSE,
            "outcome": Outcome.ERROR,
            "method": message.get("method"),
            "name": name if isinstance(name, str) else None,
            "error": reply.get("error"),
            "jsonrpc_id": message.get("id"),
            **who(caller),
        }
        try:
            await self.log.append(AuditEvent(arguments=self._masker.mask_json(params.get("arguments")).value, **fields))
        except (MaskingError, CanonicalEncodingError) as exc:  # the refusal is recorded all the same
            await self.log.append(AuditEvent(detail=_unrecordable("arguments", exc, None), **fields))

    async def stray_reply(self, caller: CallerContext, message: dict[str, Any]) -> None:
        """Record a client's reply that no request of the gateway waits for (it came after the
        gateway stopped waiting, or names an id it never sent): it goes nowhere, but it came in."""
        fields = {
            "kind": EventKind.RESPONSE,
            "outcome": Outcome.ERROR,
            "jsonrpc_id": message.get("id"),
            **who(caller),
        }
        detail = {"direction": Direction.TO_CLIENT.value, "reason": "no request of the gateway waits for this reply"}
        try:
            masked = self._masker.mask_json({k: v for k, v in message.items() if k in ("result", "error")}).value
            await self.log.append(AuditEvent(result=masked.get("result"), error=masked.get("error"), detail=detail, **fields))
        except (MaskingError, CanonicalEncodingError) as exc:  # recorded all the same, without its contents
            await self.log.append(AuditEvent(detail=_unrecordable("result", exc, detail), **fields))

    async def session(self, caller: CallerContext, opened: bool) -> None:
        kind = EventKind.SESSION_OPENED if opened else EventKind.SESSION_CLOSED
        await self.log.append(AuditEvent(kind=kind, **who(caller)))

    async def gateway(self, kind: EventKind, detail: dict[str, Any]) -> None:
        await self.log.append(AuditEvent(kind=kind, detail=detail))
