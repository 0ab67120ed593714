"""Sealed raw values: auditor keys, envelopes, their binding to a record, and the audit stage sealing for real.

Every failure case names the error it expects (UnsealError, MalformedEnvelopeError, KeyFormatError)
and, where two causes share a class, the message part that tells them apart.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from bastion.audit.canonical import canonical_bytes
from bastion.audit.keys import KeyFormatError, generate_signing_key, render_signing_key, render_vkey
from bastion.audit.log import Receipt
from bastion.audit.record import AuditEvent, EventKind, compute_arguments_sha256, render_body
from bastion.audit.seal_keys import (
    SealPrivateKey,
    generate_seal_key,
    parse_seal_private_key,
    parse_seal_public_key,
    render_seal_private_key,
    render_seal_public_key,
)
from bastion.audit.sealing import (
    MalformedEnvelopeError,
    SealContext,
    SealedField,
    Sealer,
    UnsealError,
    build_sealer,
    open_envelope,
    parse_envelope,
    render_envelope,
    seal,
    unseal_record,
)
from bastion.audit.settings import SealRawSettings
from bastion.exchange import CallerContext, Direction, Exchange, Kind, Reply
from bastion.identity.principal import Principal
from bastion.masking import MaskingEngine
from bastion.masking.settings import MaskingSettings
from bastion.stages.audit import AuditStage, raw_sha256
from bastion.stages.masking import MaskingStage

SCHEMA_PATH = Path(__file__).parents[3] / "docs" / "audit-record.schema.json"
STAMP = "2026-11-24T23:59:01.000Z"
ALICE = SealPrivateKey("alice-2026", bytes(range(32)))
BOB = SealPrivateKey("bob-2026", bytes(range(32, 64)))
MALLORY = SealPrivateKey("mallory", bytes(range(64, 96)))
CARD = "4111 1111 1111 1111"
CONTEXT = SealContext("gw/log", SealedField.ARGUMENTS, "echo", "tools/call", "echo", "ab" * 32)


def flip(data: str, byte: int = 0) -> str:
    raw = bytearray(base64.b64decode(data))
    raw[byte] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def sealed_body(arguments: dict[str, Any], *, sealer: Sealer | None = None, seq: int = 3) -> bytes:
    """A request record body as the audit stage writes it, sealed for ALICE and BOB."""
    sealer = sealer or Sealer("gw/log", [ALICE.public(), BOB.public()], SealedField)
    value = sealer.seal_value(SealedField.ARGUMENTS, arguments, upstream="echo", method="tools/call", name="echo")
    assert value is not None
    event = AuditEvent(
        kind=EventKind.REQUEST, upstream="echo", method="tools/call", name="echo", arguments={"text": "[CARD]"},
        arguments_sha256=value.sha256, sealed={"arguments": value.envelope},
    )
    return canonical_bytes(render_body(event, "gw/log", seq, STAMP))


# -- keys ------------------------------------------------------------------------------------------------


def test_key_texts_round_trip_when_rendered_and_parsed() -> None:
    key = generate_seal_key("auditor-1")
    assert parse_seal_private_key(render_seal_private_key(key)) == key
    public_text = render_seal_public_key(key.public())
    assert public_text.startswith("SEAL+auditor-1+")
    assert parse_seal_public_key(public_text) == key.public()
    assert generate_seal_key("auditor-1") != key


@pytest.mark.parametrize(
    "text",
    [
        render_signing_key(generate_signing_key("auditor-1")),  # a checkpoint key is not a seal key
        render_vkey(generate_signing_key("auditor-1").public()),
        render_seal_public_key(ALICE.public()).replace("alice-2026", "alice-2027"),  # key id no longer matches
        render_seal_public_key(ALICE.public())[:-8] + "!!!!!!!=",
        "SEAL+alice+00000000+" + base64.b64encode(b"short").decode(),
        "SEAL+alice+only-two-fields",
        "SEAL+al ice+00000000+" + base64.b64encode(bytes(32)).decode(),
    ],
    ids=["signing-key", "vkey", "renamed", "bad-base64", "short-key", "missing-field", "space-in-name"],
)
def test_public_key_is_refused_when_malformed(text: str) -> None:
    with pytest.raises(KeyFormatError):
        parse_seal_public_key(text)


def test_private_key_is_refused_when_key_id_does_not_match() -> None:
    text = render_seal_private_key(ALICE)
    with pytest.raises(KeyFormatError, match="key id"):
        parse_seal_private_key(text.replace(ALICE.public().key_id.hex(), "00000000"))
    with pytest.raises(KeyFormatError, match="prefix"):
        parse_seal_private_key(render_seal_public_key(ALICE.public()))


def test_build_sealer_loads_recipient_files_when_configured(tmp_path: Path) -> None:
    assert build_sealer(None, "gw/log") is None
    path = tmp_path / "alice.pub"
    path.write_text(render_seal_public_key(ALICE.public()) + "\n")
    sealer = build_sealer(SealRawSettings(recipients=[path], what=[SealedField.RESULT]), "gw/log")
    assert sealer is not None and sealer.fields == {SealedField.RESULT}
    with pytest.raises(KeyFormatError, match="cannot read"):
        build_sealer(SealRawSettings(recipients=[tmp_path / "absent.pub"]), "gw/log")
    (tmp_path / "private.pub").write_text(render_seal_private_key(ALICE))
    with pytest.raises(KeyFormatError):  # a private key handed to the gateway by mistake is refused
        build_sealer(SealRawSettings(recipients=[tmp_path / "private.pub"]), "gw/log")


# -- envelopes -------------------------------------------------------------------------------------------


def test_every_recipient_opens_the_value_when_sealed_for_several() -> None:
    envelope = seal(b'{"k":"v"}', CONTEXT, [ALICE.public(), BOB.public()])
    assert [r.key_name for r in envelope.recipients] == ["alice-2026", "bob-2026"]
    assert len({r.ephemeral_public for r in envelope.recipients}) == 2
    for key in (ALICE, BOB):
        assert open_envelope(parse_envelope(render_envelope(envelope)), CONTEXT, key) == b'{"k":"v"}'


def test_each_seal_uses_a_fresh_data_key_when_the_value_repeats() -> None:
    one, two = seal(b"same", CONTEXT, [ALICE.public()]), seal(b"same", CONTEXT, [ALICE.public()])
    assert one.nonce != two.nonce and one.ciphertext != two.ciphertext
    assert one.recipients[0].wrapped_key != two.recipients[0].wrapped_key
    assert b"same" not in one.ciphertext


def test_other_key_cannot_open_when_not_a_recipient() -> None:
    envelope = seal(b"secret", CONTEXT, [ALICE.public()])
    with pytest.raises(UnsealError, match="not sealed for key mallory") as info:
        open_envelope(envelope, CONTEXT, MALLORY)
    assert "alice-2026+" in str(info.value)
    # Same name and id as ALICE but another secret: the id check catches it before any decryption.
    with pytest.raises(UnsealError, match="not sealed for key"):
        open_envelope(envelope, CONTEXT, SealPrivateKey("alice-2026", bytes(range(1, 33))))


@pytest.mark.parametrize(
    "change",
    [
        {"origin": "gw/other"},
        {"field": SealedField.RESULT},
        {"upstream": "github"},
        {"method": "resources/read"},
        {"name": "delete_repo"},
        {"sha256": "cd" * 32},
    ],
    ids=lambda c: next(iter(c)),
)
def test_open_fails_when_the_binding_differs(change: dict[str, Any]) -> None:
    envelope = seal(b"secret", CONTEXT, [ALICE.public()])
    with pytest.raises(UnsealError, match="does not belong to this record"):
        open_envelope(envelope, dataclasses.replace(CONTEXT, **change), ALICE)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.update(ciphertext=flip(e["ciphertext"], 3)), "does not belong"),
        (lambda e: e.update(ciphertext=flip(e["ciphertext"], -1)), "does not belong"),  # the GCM tag
        (lambda e: e.update(nonce=flip(e["nonce"])), "does not belong"),
        (lambda e: e["recipients"][0].update(wrapped_key=flip(e["recipients"][0]["wrapped_key"])), "does not open"),
        (lambda e: e["recipients"][0].update(ephemeral_public=flip(e["recipients"][0]["ephemeral_public"])),
         "does not open"),
    ],
    ids=["flip-ciphertext", "flip-tag", "flip-nonce", "flip-wrapped-key", "flip-ephemeral"],
)
def test_open_fails_when_a_bit_of_the_envelope_flips(mutate: Any, message: str) -> None:
    rendered = render_envelope(seal(b"secret", CONTEXT, [ALICE.public()]))
    mutate(rendered)
    with pytest.raises(UnsealError, match=message):
        open_envelope(parse_envelope(rendered), CONTEXT, ALICE)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e.update(version="bastion.seal/2"),
        lambda e: e.update(recipients=[]),
        lambda e: e.update(recipients="alice"),
        lambda e: e["recipients"][0].pop("key_name"),
        lambda e: e["recipients"][0].update(key_id="zz"),
        lambda e: e["recipients"][0].update(key_id=None),
        lambda e: e["recipients"][0].update(wrapped_key=7),
        lambda e: e.update(nonce=base64.b64encode(b"short").decode()),
        lambda e: e.update(ciphertext="not base64!"),
    ],
    ids=["version", "no-recipients", "recipients-not-list", "no-key-name", "key-id-not-hex", "key-id-null",
         "wrapped-key-not-string", "short-nonce", "ciphertext-not-base64"],
)
def test_parse_raises_only_malformed_envelope_when_shape_is_wrong(mutate: Any) -> None:
    rendered = render_envelope(seal(b"secret", CONTEXT, [ALICE.public()]))
    mutate(rendered)
    with pytest.raises(MalformedEnvelopeError):
        parse_envelope(rendered)
    with pytest.raises(MalformedEnvelopeError):
        parse_envelope(["not", "an", "object"])


# -- records ---------------------------------------------------------------------------------------------


def test_sealed_record_validates_and_unseals_when_written_as_the_stage_does() -> None:
    arguments = {"text": f"card {CARD}", "n": 1.5}
    body = sealed_body(arguments)
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.validators.validator_for(schema)(schema).validate(json.loads(body))
    assert CARD.encode() not in body
    assert json.loads(body)["what"]["arguments_sha256"] == compute_arguments_sha256(arguments)
    assert unseal_record(body, BOB) == (SealedField.ARGUMENTS, arguments)


def test_unseal_fails_when_an_envelope_is_moved_to_another_record() -> None:
    first, second = json.loads(sealed_body({"text": "one"}, seq=3)), json.loads(sealed_body({"text": "two"}, seq=5))
    second["sealed"] = first["sealed"]
    with pytest.raises(UnsealError, match="does not belong to this record"):
        unseal_record(canonical_bytes(second), ALICE)


def test_unseal_fails_when_the_record_digest_is_rewritten_to_match_a_moved_envelope() -> None:
    # Moving the digest along with the envelope makes the AAD match: that record now claims the
    # other call's arguments, which the Merkle tree catches (verify: MODIFIED_RECORD); here the
    # binding still refuses an envelope whose context names another origin.
    body = json.loads(sealed_body({"text": "one"}))
    body["origin"] = "gw/other"
    with pytest.raises(UnsealError, match="does not belong"):
        unseal_record(canonical_bytes(body), ALICE)
    del body["what"]["arguments_sha256"]
    with pytest.raises(MalformedEnvelopeError, match="no origin or digest"):
        unseal_record(canonical_bytes(body), ALICE)


def test_unseal_refuses_when_the_record_has_no_or_several_sealed_values() -> None:
    plain = canonical_bytes(render_body(AuditEvent(kind=EventKind.REQUEST), "gw/log", 0, STAMP))
    with pytest.raises(UnsealError, match="holds no sealed value"):
        unseal_record(plain, ALICE)
    body = json.loads(sealed_body({"text": "one"}))
    with pytest.raises(UnsealError, match="holds no sealed result"):
        unseal_record(canonical_bytes(body), ALICE, SealedField.RESULT)
    body["sealed"]["result"] = body["sealed"]["arguments"]
    with pytest.raises(UnsealError, match="several"):
        unseal_record(canonical_bytes(body), ALICE)
    with pytest.raises(UnsealError, match="not JSON"):
        unseal_record(b"{not json", ALICE)


def test_sealer_skips_when_the_field_is_not_configured_or_has_no_canonical_form() -> None:
    sealer = Sealer("gw/log", [ALICE.public()], [SealedField.RESULT])
    assert sealer.seal_value(SealedField.ARGUMENTS, {"a": 1}, upstream=None, method="tools/call", name=None) is None
    result = {"content": [{"type": "text", "text": CARD}], "isError": False}
    sealed = sealer.seal_value(SealedField.RESULT, result, upstream=None, method="tools/call", name=None)
    assert sealed is not None and sealed.sha256 == raw_sha256(result)
    both = Sealer("gw/log", [ALICE.public()], SealedField)
    assert both.seal_value(SealedField.ARGUMENTS, {"big": 2**60}, upstream=None, method="tools/call", name=None) is None
    with pytest.raises(KeyFormatError):
        Sealer("gw/log", [], SealedField)


# -- the audit stage -------------------------------------------------------------------------------------


class FakeLog:
    """Collects appended events; stands in for AuditLog."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def append(self, event: AuditEvent) -> Receipt:
        return await (await self.enqueue(event))

    async def enqueue(self, event: AuditEvent) -> asyncio.Future[Receipt]:
        self.events.append(event)
        receipt: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        receipt.set_result(Receipt(seq=len(self.events) - 1, leaf_hash=b"\x00" * 32))
        return receipt


async def run_call(sealer: Sealer | None, arguments: dict[str, Any], reply: Reply) -> list[bytes]:
    engine = MaskingEngine(MaskingSettings())
    log = FakeLog()
    audit = AuditStage(log, engine.masker(None), sealer)  # type: ignore[arg-type]
    masking = MaskingStage(engine, False, keep_raw_result=sealer is not None)

    async def deliver(ex: Exchange) -> Reply:
        return reply

    ex = Exchange(
        direction=Direction.TO_UPSTREAM, kind=Kind.REQUEST, method="tools/call",
        params={"name": "echo", "arguments": arguments}, id=1,
        caller=CallerContext(Principal.anonymous(), "s-1", "/servers/echo/mcp"), upstream="echo",
        deliver=deliver, name="echo",
    )
    released = await audit(ex, lambda e: masking(e, e.deliver))
    assert released is not None and CARD not in orjson.dumps(released).decode()
    return [canonical_bytes(render_body(e, "gw/log", seq, STAMP)) for seq, e in enumerate(log.events)]


def test_stage_seals_raw_arguments_and_result_when_a_sealer_is_given() -> None:
    arguments = {"text": f"card {CARD}"}
    raw_result = {"content": [{"type": "text", "text": f"card {CARD}"}], "isError": False}
    request, response = asyncio.run(run_call(Sealer("gw/log", [ALICE.public()], SealedField), arguments, {"result": raw_result}))
    assert CARD.encode() not in request and CARD.encode() not in response
    assert b"[CARD]" in request and b"[CARD]" in response
    assert unseal_record(request, ALICE) == (SealedField.ARGUMENTS, arguments)
    assert unseal_record(response, ALICE) == (SealedField.RESULT, raw_result)
    assert json.loads(response)["result"]["upstream_sha256"] == hashlib.sha256(orjson.dumps(raw_result)).hexdigest()


def test_stage_writes_no_sealed_values_when_sealing_is_off() -> None:
    raw_result = {"content": [{"type": "text", "text": f"card {CARD}"}], "isError": False}
    request, response = asyncio.run(run_call(None, {"text": f"card {CARD}"}, {"result": raw_result}))
    assert "sealed" not in json.loads(request) and "sealed" not in json.loads(response)
    assert CARD.encode() not in request + response
