"""Audit record bodies: layout, omitted nulls, times, digests, and validity against the published schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bastion.audit.canonical import canonical_bytes
from bastion.audit.record import (
    AuditEvent,
    EventKind,
    Outcome,
    compute_arguments_sha256,
    compute_sha256_hex,
    render_body,
    render_time,
)

SCHEMA_PATH = Path(__file__).parents[3] / "docs" / "audit-record.schema.json"
MOMENT = datetime(2026, 11, 24, 23, 59, 1, 123456, tzinfo=UTC)
STAMP = render_time(MOMENT)

FULL = AuditEvent(
    kind=EventKind.RESPONSE,
    outcome=Outcome.OK,
    subject="alice@example.com",
    issuer="https://idp.example.com",
    auth_method="oauth",
    groups=("eng", "oncall"),
    client_id="cli-1",
    client_info={"name": "claude", "version": "1.2"},
    source_address="10.0.0.7",
    user_agent="mcp-client/1.0",
    upstream="github",
    endpoint="/servers/github/mcp",
    method="tools/call",
    name="create_issue",
    arguments={"title": "x", "token": "***"},
    arguments_sha256=compute_arguments_sha256({"title": "x", "token": "secret"}),
    result={"content": [{"type": "text", "text": "ok"}]},
    result_sha256=compute_sha256_hex(b'{"content":[]}'),
    is_error=False,
    error={"code": -32010, "message": "Denied by policy"},
    latency_ms=12.5,
    jsonrpc_id=7,
    session_id="sess-1",
    traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    request_seq=41,
    rule_id="deny-delete",
    action="allow",
    policy_hash="ab" * 32,
    reason="writes need a ticket",
    masking={"profile": "pii", "fields_masked": 1},
    detail={"note": "n"},
    sealed={"arguments": {"version": "bastion.seal/1", "nonce": "AAAAAAAAAAAAAAAA", "ciphertext": "AAAA",
                          "recipients": [{"key_name": "auditor", "key_id": "0a1b2c3d", "ephemeral_public": "AAAA",
                                          "wrapped_key": "AAAA"}]}},
)


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_full_event_renders_every_group_and_validates(validator: jsonschema.protocols.Validator) -> None:
    body = render_body(FULL, "gw-1", 42, STAMP)
    validator.validate(body)
    assert body["schema"] == "bastion.audit/2"
    assert body["decision"] == {"rule_id": "deny-delete", "action": "allow", "policy_hash": "ab" * 32,
                                "reason": "writes need a ticket"}
    assert (body["origin"], body["seq"], body["time"], body["kind"], body["outcome"]) == (
        "gw-1", 42, "2026-11-24T23:59:01.123Z", "response", "ok")
    assert body["who"]["groups"] == ["eng", "oncall"]
    assert body["what"]["arguments"] == {"title": "x", "token": "***"}
    assert body["result"]["is_error"] is False
    assert body["correlation"] == {"jsonrpc_id": 7, "session_id": "sess-1", "request_seq": 41,
                                   "traceparent": FULL.traceparent}
    assert set(body) == {"schema", "origin", "seq", "time", "kind", "outcome", "who", "where", "what", "result",
                         "correlation", "decision", "masking", "detail", "sealed"}
    assert body["sealed"]["arguments"]["recipients"][0]["key_id"] == "0a1b2c3d"


def test_null_fields_and_empty_groups_are_omitted_when_rendering(validator: jsonschema.protocols.Validator) -> None:
    body = render_body(AuditEvent(kind=EventKind.GATEWAY_STARTED), "gw-1", 0, STAMP)
    validator.validate(body)
    assert body == {"schema": "bastion.audit/2", "origin": "gw-1", "seq": 0, "time": "2026-11-24T23:59:01.123Z",
                    "kind": "gateway_started"}
    partial = render_body(AuditEvent(kind=EventKind.REQUEST, subject="bob", is_error=False), "gw-1", 1, STAMP)
    assert partial["who"] == {"subject": "bob"}
    assert partial["result"] == {"is_error": False}


@pytest.mark.parametrize("kind", list(EventKind))
def test_every_kind_validates_when_rendered(kind: EventKind, validator: jsonschema.protocols.Validator) -> None:
    validator.validate(render_body(AuditEvent(kind=kind, outcome=Outcome.DENIED), "gw", 3, STAMP))


def test_version_1_records_validate_when_they_carry_no_reason(validator: jsonschema.protocols.Validator) -> None:
    body = render_body(FULL, "gw-1", 42, STAMP)
    del body["decision"]["reason"]
    validator.validate(body | {"schema": "bastion.audit/1"})  # written before /2: still a valid record


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.update(schema="bastion.audit/3"),
        lambda b: b.update(schema="bastion.audit/1"),  # /1 had no decision.reason
        lambda b: b.update(time="2026-11-24T23:59:01Z"),
        lambda b: b.update(kind="unheard_of"),
        lambda b: b.update(seq=-1),
        lambda b: b["who"].update(nickname="x"),
        lambda b: b["what"].update(arguments_sha256="XYZ"),
        lambda b: b.update(extra=1),
        lambda b: b["sealed"]["arguments"].update(version="bastion.seal/2"),
        lambda b: b["sealed"].update(params=b["sealed"]["arguments"]),
        lambda b: b["sealed"]["arguments"].update(recipients=[]),
    ],
    ids=["schema-version", "reason-in-version-1", "time-without-ms", "unknown-kind", "negative-seq", "unknown-who-field", "bad-digest",
         "unknown-top-field", "sealed-version", "unknown-sealed-field", "sealed-without-recipients"],
)
def test_schema_rejects_a_body_when_mutated(mutate: Any, validator: jsonschema.protocols.Validator) -> None:
    body = render_body(FULL, "gw-1", 42, STAMP)
    mutate(body)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(body)


def test_time_is_converted_to_utc_milliseconds_when_given_another_zone() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert render_time(datetime(2026, 1, 1, 1, 0, 0, 999999, tzinfo=plus_two)) == "2025-12-31T23:00:00.999Z"
    with pytest.raises(ValueError):
        render_time(datetime(2026, 1, 1))


def test_arguments_digest_ignores_key_order_when_values_match() -> None:
    assert compute_arguments_sha256({"a": 1, "b": [1, 2]}) == compute_arguments_sha256({"b": [1, 2], "a": 1})
    assert compute_arguments_sha256({"a": 1}) != compute_arguments_sha256({"a": 2})
    assert compute_sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_body_is_canonicalisable_when_it_carries_unicode_and_floats() -> None:
    event = AuditEvent(kind=EventKind.REQUEST, arguments={"q": "café ☕", "n": 1.5}, latency_ms=0.25)
    encoded = canonical_bytes(render_body(event, "gw", 0, STAMP))
    assert json.loads(encoded)["what"]["arguments"] == {"q": "café ☕", "n": 1.5}
