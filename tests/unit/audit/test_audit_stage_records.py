"""What the audit stage writes for each kind of exchange: digests, progress, cancellation, flags.

Each test runs the real stage over a real (in-memory SQLite) log and reads the records back.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from bastion.audit.canonical import canonical_bytes
from bastion.audit.keys import generate_signing_key
from bastion.audit.log import AuditLog
from bastion.audit.record import AuditEvent, EventKind
from bastion.exchange import CallerContext, Direction, Exchange, Kind, Reply
from bastion.identity.principal import Principal
from bastion.masking import MaskingEngine
from bastion.masking.settings import MaskingSettings
from bastion.stages import audit as audit_stage
from bastion.stages.audit import AuditStage
from bastion.storage import AuditStore, open_store

pytestmark = pytest.mark.anyio

ORIGIN = "gw/stage-records"


class Harness:
    def __init__(self, store: AuditStore, log: AuditLog) -> None:
        self.store = store
        self.log = log
        self.stage = AuditStage(log, MaskingEngine(MaskingSettings()).masker(None))

    def exchange(self, method: str, params: dict[str, Any] | None, deliver: Callable[[Exchange], Awaitable[Any]],
                 *, request_id: int | None = 1) -> Exchange:
        return Exchange(
            direction=Direction.TO_UPSTREAM, kind=Kind.REQUEST if request_id is not None else Kind.NOTIFICATION,
            method=method, params=params, id=request_id,
            caller=CallerContext(Principal.anonymous(), "s-1", "/servers/up/mcp"), upstream="up",
            deliver=deliver, name=(params or {}).get("name"),
        )

    async def run(self, ex: Exchange) -> Reply | None:
        return await asyncio.wait_for(self.stage(ex, lambda e: e.deliver(e)), 5)

    async def records(self) -> list[dict[str, Any]]:
        entries = [orjson.loads(e.body) async for e in self.store.stream_entries(ORIGIN)]
        return [r for r in entries if r["kind"] not in ("gateway_started",)]


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    store = await open_store("sqlite:///:memory:")
    log = AuditLog(store, origin=ORIGIN, signing_key=generate_signing_key("gw"))
    await log.start()
    try:
        yield Harness(store, log)
    finally:
        await log.aclose()
        await store.aclose()


def answer(result: dict[str, Any]) -> Callable[[Exchange], Awaitable[Reply]]:
    async def deliver(ex: Exchange) -> Reply:
        return {"result": result}

    return deliver


async def test_every_request_with_a_payload_gets_the_digest_of_its_arguments(harness: Harness) -> None:
    params = {"name": "greet", "arguments": {"who": "Ada"}, "_meta": {"progressToken": 3}}
    await harness.run(harness.exchange("prompts/get", params, answer({"messages": []})))
    request, _ = await harness.records()
    payload = {"name": "greet", "arguments": {"who": "Ada"}}
    assert request["what"]["arguments"] == payload
    assert request["what"]["arguments_sha256"] == hashlib.sha256(canonical_bytes(payload)).hexdigest()


async def test_an_unmasked_result_gets_the_digest_of_the_result_as_received(harness: Harness) -> None:
    result = {"contents": [{"uri": "file:///a", "text": "hello"}]}
    await harness.run(harness.exchange("resources/read", {"uri": "file:///a"}, answer(result)))
    _, response = await harness.records()
    assert response["result"]["upstream_sha256"] == hashlib.sha256(orjson.dumps(result)).hexdigest()


async def test_progress_notifications_are_recorded_before_they_are_relayed(harness: Harness) -> None:
    relayed: list[dict[str, Any]] = []

    async def deliver(ex: Exchange) -> None:
        relayed.append(await harness.records())  # what the log held at the moment of release

    params = {"progressToken": 7, "progress": 1, "total": 2, "message": "copied 1 of 2 files"}
    await harness.run(harness.exchange("notifications/progress", params, deliver, request_id=None))
    [before_release] = relayed
    [note] = before_release
    assert note["kind"] == "notification" and note["what"]["method"] == "notifications/progress"
    assert note["what"]["arguments"]["message"] == "copied 1 of 2 files"


async def test_a_cancelled_request_gets_a_response_record_with_the_outcome_cancelled(harness: Harness) -> None:
    upstream_called = asyncio.Event()

    async def hang(ex: Exchange) -> Reply:
        upstream_called.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    task = asyncio.create_task(harness.run(harness.exchange("tools/call", {"name": "slow", "arguments": {}}, hang, request_id=42)))
    await asyncio.wait_for(upstream_called.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    request, response = await harness.records()
    assert response["kind"] == "response" and response["outcome"] == "cancelled"
    assert response["correlation"]["jsonrpc_id"] == 42 == request["correlation"]["jsonrpc_id"]
    assert response["correlation"]["request_seq"] == request["seq"]
    assert "released" not in response.get("result", {})


async def test_an_is_error_that_is_not_a_boolean_is_left_out_of_the_record(harness: Harness) -> None:
    result = {"content": [], "isError": "yes"}
    reply = await harness.run(harness.exchange("tools/call", {"name": "odd", "arguments": {}}, answer(result)))
    assert reply == {"result": result}  # released as the upstream sent it
    _, response = await harness.records()
    assert "is_error" not in response["result"]
    assert response["result"]["released"] == result


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"text": "x"}
    for _ in range(levels):
        value = {"a": value}
    return value


async def test_a_result_too_deep_to_encode_is_refused_and_recorded(harness: Harness) -> None:
    reply = await harness.run(harness.exchange("tools/list", None, answer({"tools": [], "x": deep(300)})))
    assert reply is not None and "error" in reply
    _, response = await harness.records()
    assert response["detail"]["unrecordable"]["part"] == "result"


async def test_a_cancelled_call_does_not_wait_for_a_hung_store(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_stage, "CANCELLED_RECORD_WAIT_S", 0.2)
    upstream_called = asyncio.Event()

    async def hang_upstream(ex: Exchange) -> Reply:
        upstream_called.set()
        harness.stage._log = HungLog()  # type: ignore[assignment]  # from now on the store hangs
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    task = asyncio.create_task(harness.run(harness.exchange("tools/call", {"name": "slow", "arguments": {}}, hang_upstream)))
    await asyncio.wait_for(upstream_called.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)  # bounded by CANCELLED_RECORD_WAIT_S, not by the store


async def test_a_second_cancellation_does_not_withdraw_the_cancelled_record(harness: Harness) -> None:
    upstream_called = asyncio.Event()
    real_append = harness.log.append
    slow_appends = asyncio.Event()

    async def slow_append(event: Any) -> Any:
        slow_appends.set()
        await asyncio.sleep(0.2)
        return await real_append(event)

    async def hang_upstream(ex: Exchange) -> Reply:
        upstream_called.set()
        harness.log.append = slow_append  # type: ignore[method-assign]
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    ex = harness.exchange("tools/call", {"name": "slow", "arguments": {}}, hang_upstream)
    task = asyncio.create_task(harness.stage(ex, lambda e: e.deliver(e)))  # the stage itself is cancelled, twice
    await asyncio.wait_for(upstream_called.wait(), 5)
    task.cancel()
    await asyncio.wait_for(slow_appends.wait(), 5)  # the cancelled record is on its way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.5)
    _, response = await harness.records()
    assert response["outcome"] == "cancelled"


class HungLog:
    async def append(self, event: Any) -> Any:
        await asyncio.Event().wait()


class GatedStore:
    """Delegates to a real store, holding every record batch until ``gate`` opens."""

    def __init__(self, inner: AuditStore) -> None:
        self.inner = inner
        self.gate = asyncio.Event()

    async def append_batch(self, batch: Any) -> None:
        if batch.entries:
            await self.gate.wait()
        await self.inner.append_batch(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_call_cancelled_while_the_writer_queue_is_full_leaves_no_record() -> None:
    inner = await open_store("sqlite:///:memory:")
    store = GatedStore(inner)
    log = AuditLog(store, origin=ORIGIN, signing_key=generate_signing_key("gw"), max_queue_records=1)  # type: ignore[arg-type]
    await log.start()
    harness = Harness(inner, log)
    filler = asyncio.create_task(log.append(AuditEvent(kind=EventKind.REQUEST, subject="filler")))
    await asyncio.sleep(0.05)  # the filler holds the only place in the queue
    call = asyncio.create_task(harness.run(harness.exchange("tools/call", {"name": "t", "arguments": {}}, answer({}))))
    await asyncio.sleep(0.05)
    call.cancel()  # while it waits for room: nothing of it is queued
    with pytest.raises(asyncio.CancelledError):
        await call
    store.gate.set()
    await filler
    await log.aclose()
    try:
        assert [r.get("who", {}).get("subject") for r in await harness.records()] == ["filler"]
    finally:
        await inner.aclose()
