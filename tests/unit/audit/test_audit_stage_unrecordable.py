"""A payload that has no record form is refused with a record saying why, never forwarded or released.

Arguments nested deeper than the masker's limit, or integers beyond ±2^53 (RFC 8785 has no form
for them), cannot be written into a record. The call must then not go upstream, the result must
not be released, the client must get a precise error at once, and the log must still say so.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from bastion.audit.keys import generate_signing_key
from bastion.audit.log import AuditLog
from bastion.exchange import CallerContext, Direction, Exchange, Kind, Reply
from bastion.identity.principal import Principal
from bastion.jsonrpc import codes
from bastion.masking import MaskingEngine
from bastion.masking.settings import MaskingSettings
from bastion.stages.audit import AuditStage
from bastion.storage import open_store

pytestmark = pytest.mark.anyio

HUGE = 2**60


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"text": "x"}
    for _ in range(depth):
        value = {"a": value}
    return value


async def run_call(arguments: dict[str, Any], upstream_result: dict[str, Any]) -> tuple[Reply | None, list[Any], int]:
    store = await open_store("sqlite:///:memory:")
    log = AuditLog(store, origin="gw/unrecordable", signing_key=generate_signing_key("gw"))
    await log.start()
    delivered = 0

    async def deliver(ex: Exchange) -> Reply:
        nonlocal delivered
        delivered += 1
        return {"result": upstream_result}

    ex = Exchange(
        direction=Direction.TO_UPSTREAM, kind=Kind.REQUEST, method="tools/call",
        params={"name": "echo", "arguments": arguments}, id=1,
        caller=CallerContext(Principal.anonymous(), "s-1", "/servers/echo/mcp"), upstream="echo",
        deliver=deliver, name="echo",
    )
    stage = AuditStage(log, MaskingEngine(MaskingSettings()).masker(None))
    try:
        reply = await asyncio.wait_for(stage(ex, lambda e: e.deliver(e)), 5)
        await log.aclose()
        records = [orjson.loads(e.body) async for e in store.stream_entries("gw/unrecordable")]
    finally:
        await store.aclose()
    return reply, [r for r in records if r["kind"] in ("request", "response")], delivered


@pytest.mark.parametrize(("arguments", "reason"), [
    ({"text": "x", "n": HUGE}, "no canonical JSON form"),
    (nested(70), "max_depth"),
])
async def test_request_is_refused_and_recorded_when_its_arguments_have_no_record_form(
    arguments: dict[str, Any], reason: str
) -> None:
    reply, records, delivered = await run_call(arguments, {"content": []})
    assert delivered == 0
    assert reply is not None and reply["error"]["code"] == codes.INVALID_PARAMS
    [request] = records
    assert request["kind"] == "request" and request["outcome"] == "denied"
    assert request["detail"]["unrecordable"] == {"part": "arguments", "reason": reason}
    assert "arguments" not in request.get("what", {})


async def test_result_is_withheld_and_recorded_when_it_has_no_record_form() -> None:
    reply, records, delivered = await run_call({"text": "x"}, {"content": [], "structuredContent": {"n": HUGE}})
    assert delivered == 1
    assert reply is not None and reply["error"]["code"] == codes.MASKING_FAILED and "result" not in reply
    request, response = records
    assert response["outcome"] == "error" and response["correlation"]["request_seq"] == request["seq"]
    assert response["detail"]["unrecordable"] == {"part": "result", "reason": "no canonical JSON form"}
    assert response["result"]["error"] == reply["error"] and "released" not in response["result"]
