"""The audit record: what one event says (``AuditEvent``) and its stored JSON body (``render_body``).

Owns the event vocabulary (``EventKind``, ``Outcome``), the body layout ``bastion.audit/2``
(published as docs/audit-record.schema.json, which also describes the ``bastion.audit/1``
records older gateways wrote) and the SHA-256 digests a record carries. Sequence
numbers, times, canonical bytes and leaf hashes are assigned by audit/log.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from bastion.audit.canonical import canonical_bytes

SCHEMA_VERSION = "bastion.audit/2"
"""/2 added ``decision.reason``; a log may hold records of both versions."""


class EventKind(StrEnum):
    """What happened; the ``kind`` column of a record."""

    SESSION_OPENED = "session_opened"
    SESSION_CLOSED = "session_closed"
    REQUEST = "request"
    RESPONSE = "response"
    NOTIFICATION = "notification"
    CANCELLED = "cancelled"
    APPROVAL = "approval"
    GATEWAY_STARTED = "gateway_started"
    GATEWAY_STOPPED = "gateway_stopped"
    CONFIG_CHANGED = "config_changed"
    LOG_READ = "log_read"
    LOG_EXPORTED = "log_exported"
    MODE_CHANGED = "mode_changed"
    RECORDS_LOST = "records_lost"
    """Written after best-effort mode dropped records, so the gap is visible in the log itself."""


class Outcome(StrEnum):
    """How the exchange ended as far as the client is concerned."""

    OK = "ok"
    ERROR = "error"
    DENIED = "denied"
    HELD = "held"
    APPROVED = "approved"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    UPSTREAM_FAILED = "upstream_failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """One event to record; every field but ``kind`` is optional and omitted from the body when None."""

    kind: EventKind
    outcome: Outcome | None = None
    # who
    subject: str | None = None
    issuer: str | None = None
    auth_method: str | None = None
    groups: tuple[str, ...] = ()
    client_id: str | None = None
    client_info: Mapping[str, Any] | None = None
    """The MCP ``clientInfo`` the session declared (name, version, ...)."""
    source_address: str | None = None
    user_agent: str | None = None
    # where
    upstream: str | None = None
    endpoint: str | None = None
    # what
    method: str | None = None
    name: str | None = None
    """Tool, resource URI or prompt name the method addresses."""
    arguments: Any = None
    """Arguments as forwarded, already masked for the log."""
    arguments_sha256: str | None = None
    """``compute_arguments_sha256`` of the arguments as forwarded, before masking."""
    # result
    result: Any = None
    """The result as released to the client (masked)."""
    result_sha256: str | None = None
    """``compute_sha256_hex`` of the upstream's raw result bytes."""
    is_error: bool | None = None
    error: Mapping[str, Any] | None = None
    """The JSON-RPC error object sent to the client, if any."""
    latency_ms: float | None = None
    # correlation
    jsonrpc_id: str | int | None = None
    session_id: str | None = None
    traceparent: str | None = None
    request_seq: int | None = None
    """Seq of the request record a response answers."""
    # decision
    rule_id: str | None = None
    action: str | None = None
    policy_hash: str | None = None
    reason: str | None = None
    """Why the gateway decided as it did: the rule's own reason, the default's, or its refusal's."""
    # masking and the rest
    masking: Mapping[str, Any] | None = None
    detail: Mapping[str, Any] | None = None
    sealed: Mapping[str, Any] | None = None
    """Raw values encrypted for auditors, by field (``arguments``, ``result``); see audit/sealing.py."""


def parse_rfc3339(text: str, *, naive_is_utc: bool = False) -> datetime:
    """Return an RFC 3339 date-time (``t`` and ``z`` allowed) as an aware datetime in its own offset.

    Raises:
        ValueError: not a date-time, or no UTC offset (unless ``naive_is_utc``: then it is UTC).
    """
    try:
        moment = datetime.fromisoformat(text.strip().upper())
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an RFC 3339 date-time such as 2026-07-01T12:00:00Z") from exc
    if moment.tzinfo is None:
        if not naive_is_utc:
            raise ValueError(f"{text!r} has no UTC offset: add Z, or one such as +02:00")
        moment = moment.replace(tzinfo=UTC)
    return moment


def render_time(moment: datetime) -> str:
    """Return RFC 3339 UTC with milliseconds, e.g. ``2026-11-24T23:59:01.123Z``.

    Preconditions: ``moment`` is timezone-aware.
    """
    if moment.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # isoformat is C code; the writer stamps every record, so the "+00:00" is cut, not converted.
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def compute_sha256_hex(data: bytes) -> str:
    """Return the lowercase hex SHA-256 of ``data`` (used for the upstream's raw result)."""
    return hashlib.sha256(data).hexdigest()


def compute_arguments_sha256(arguments: Any) -> str:
    """Return the hex SHA-256 of the arguments' RFC 8785 canonical JSON.

    Raises:
        CanonicalEncodingError: the arguments have no canonical JSON form.
    """
    return compute_sha256_hex(canonical_bytes(arguments))


def _present(*pairs: tuple[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in pairs if value is not None}


def render_body(event: AuditEvent, origin: str, seq: int, time: str) -> dict[str, Any]:
    """Return the record body (schema ``bastion.audit/2``) with null fields and empty groups omitted.

    Preconditions: ``seq >= 0``; ``time`` comes from ``render_time``.
    """
    e = event
    # Written out field by field: this runs for every record on the hot path.
    body: dict[str, Any] = {"schema": SCHEMA_VERSION, "origin": origin, "seq": seq, "time": time, "kind": e.kind._value_}
    if e.outcome is not None:
        body["outcome"] = e.outcome._value_
    who = _present(
        ("subject", e.subject),
        ("issuer", e.issuer),
        ("auth_method", e.auth_method),
        ("groups", list(e.groups) or None),
        ("client_id", e.client_id),
        ("client_info", dict(e.client_info) if e.client_info is not None else None),
        ("source_address", e.source_address),
        ("user_agent", e.user_agent),
    )
    if who:
        body["who"] = who
    where = _present(("upstream", e.upstream), ("endpoint", e.endpoint))
    if where:
        body["where"] = where
    what = _present(("method", e.method), ("name", e.name), ("arguments", e.arguments), ("arguments_sha256", e.arguments_sha256))
    if what:
        body["what"] = what
    result = _present(
        ("released", e.result),
        ("upstream_sha256", e.result_sha256),
        ("is_error", e.is_error),
        ("error", dict(e.error) if e.error is not None else None),
        ("latency_ms", e.latency_ms),
    )
    if result:
        body["result"] = result
    correlation = _present(
        ("jsonrpc_id", e.jsonrpc_id), ("session_id", e.session_id), ("traceparent", e.traceparent), ("request_seq", e.request_seq)
    )
    if correlation:
        body["correlation"] = correlation
    decision = _present(("rule_id", e.rule_id), ("action", e.action), ("policy_hash", e.policy_hash), ("reason", e.reason))
    if decision:
        body["decision"] = decision
    if e.masking:
        body["masking"] = dict(e.masking)
    if e.detail:
        body["detail"] = dict(e.detail)
    if e.sealed:
        body["sealed"] = dict(e.sealed)
    return body
