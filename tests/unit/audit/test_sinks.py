"""Audit sinks: JSON Lines, OTLP/HTTP JSON and RFC 5424 syslog copies of committed records.

Receivers are real loopback sockets (an in-loop uvicorn for OTLP, asyncio UDP/TCP servers for
syslog). Every wait is bounded; synchronisation is on events and queues, never sleeps.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pydantic
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bastion.audit.canonical import canonical_bytes
from bastion.audit.entry import LogEntry
from bastion.audit.hashing import hash_leaf
from bastion.audit.keys import generate_signing_key, render_signing_key
from bastion.audit.log import AuditLog, CheckpointPolicy
from bastion.audit.record import AuditEvent, EventKind
from bastion.audit.settings import AuditSettings
from bastion.audit.sinks import (
    JsonLinesSink,
    JsonLinesSinkSettings,
    OtlpSink,
    OtlpSinkSettings,
    Sink,
    SinkFanout,
    SyslogSink,
    SyslogSinkSettings,
    escape_json_text,
    render_syslog_message,
)
from bastion.storage import open_store

pytestmark = pytest.mark.anyio

WAIT_S = 5.0
ORIGIN = "bastion.test/sinks"
QUIET = CheckpointPolicy(every_records=1_000_000, every_s=3600, heartbeat_s=3600)
HOSTILE = "line one\nline two\r\u2028<13>1 forged\x85\x7f\u202eevil"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def make_entry(seq: int, *, text: str = "hello", outcome: str | None = "ok", pad: int = 0) -> LogEntry:
    body: dict[str, Any] = {"schema": "bastion.audit/1", "origin": ORIGIN, "seq": seq,
                            "time": "2026-11-24T23:59:01.123Z", "kind": "response",
                            "result": {"released": text + "x" * pad},
                            "correlation": {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01"}}
    if outcome is not None:
        body["outcome"] = outcome
    raw = canonical_bytes(body)
    return LogEntry(ORIGIN, seq, "2026-11-24T23:59:01.123Z", "response", raw, hash_leaf(raw))


class GatedSink(Sink):
    """Records what it delivers; each delivery waits for ``gate`` when one is set."""

    def __init__(self, max_buffer_records: int = 100, max_batch_records: int = 100) -> None:
        super().__init__("gated", max_buffer_records=max_buffer_records, max_batch_records=max_batch_records,
                         drain_timeout_s=WAIT_S)
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.delivered: asyncio.Queue[LogEntry] = asyncio.Queue()

    async def _deliver(self, batch: list[LogEntry]) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        for entry in batch:
            self.delivered.put_nowait(entry)


async def take(queue: asyncio.Queue[Any], count: int) -> list[Any]:
    async with asyncio.timeout(WAIT_S):
        return [await queue.get() for _ in range(count)]


# -- settings --------------------------------------------------------------------------------------


def test_settings_pick_the_sink_kind_when_type_is_given() -> None:
    settings = AuditSettings(signing_key_env="K", sinks=[
        {"type": "jsonl", "path": "/tmp/x.jsonl"},
        {"type": "otlp", "endpoint": "http://127.0.0.1:4318", "headers": {"authorization": "Bearer t"}},
        {"type": "syslog", "host": "127.0.0.1", "protocol": "tcp"},
    ])
    assert [type(s) for s in settings.sinks] == [JsonLinesSinkSettings, OtlpSinkSettings, SyslogSinkSettings]
    assert "Bearer t" not in repr(settings.sinks[1])  # header values are secrets


@pytest.mark.parametrize("sink", [
    {"type": "jsonl", "path": "x", "colour": "red"},
    {"type": "kafka", "brokers": "x"},
    {"type": "otlp", "endpoint": "ftp://x"},
    {"type": "syslog", "host": "h", "max_buffer_records": 0},
])
def test_settings_are_rejected_when_a_sink_is_malformed(sink: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        AuditSettings(signing_key_env="K", sinks=[sink])


# -- escaping --------------------------------------------------------------------------------------


def test_escaping_keeps_the_json_value_when_text_holds_line_breaks() -> None:
    raw = orjson.dumps({"v": HOSTILE}).decode()
    escaped = escape_json_text(raw)
    assert json.loads(escaped) == {"v": HOSTILE}
    for bad in ("\n", "\r", "\u2028", "\x85", "\x7f", "\u202e"):
        assert bad not in escaped


# -- JSON Lines ------------------------------------------------------------------------------------


async def test_jsonl_sink_writes_one_line_per_record_when_values_hold_newlines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonLinesSink(JsonLinesSinkSettings(type="jsonl", path=str(path)))
    sink.start()
    entries = [make_entry(0, text=HOSTILE), make_entry(1)]
    sink.offer(entries)
    await sink.aclose()
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == 3
    first = json.loads(lines[0])
    assert first["record"]["result"]["released"] == HOSTILE
    assert (first["origin"], first["seq"], first["leaf_hash"]) == (ORIGIN, 0, entries[0].leaf_hash.hex())
    assert sink.stats.records_sent == 2 and sink.stats.records_dropped == 0


async def test_jsonl_sink_writes_to_stdout_when_path_is_dash(capsys: pytest.CaptureFixture[str]) -> None:
    sink = JsonLinesSink(JsonLinesSinkSettings(type="jsonl"))
    sink.start()
    sink.offer([make_entry(7)])
    await sink.aclose()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and json.loads(out[0])["seq"] == 7


# -- buffering -------------------------------------------------------------------------------------


async def test_offer_drops_and_counts_when_the_buffer_is_full() -> None:
    sink = GatedSink(max_buffer_records=3, max_batch_records=1)
    sink.gate = asyncio.Event()
    sink.start()
    sink.offer([make_entry(0)])
    async with asyncio.timeout(WAIT_S):
        await sink.entered.wait()  # entry 0 is in flight, the buffer is empty again
    sink.offer([make_entry(i) for i in range(1, 6)])  # 3 fit, 2 are dropped; offer does not wait
    assert sink.stats.records_dropped == 2
    sink.gate.set()
    assert [e.seq for e in await take(sink.delivered, 4)] == [0, 1, 2, 3]
    await sink.aclose()
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (4, 2)


async def test_close_counts_the_rest_as_dropped_when_the_drain_times_out() -> None:
    sink = GatedSink(max_batch_records=1)
    sink._drain_timeout_s = 0.05
    sink.gate = asyncio.Event()  # never set: the receiver hangs
    sink.start()
    sink.offer([make_entry(i) for i in range(3)])
    async with asyncio.timeout(WAIT_S):
        await sink.entered.wait()
        await sink.aclose()
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (0, 3)


async def test_fanout_offer_never_raises_when_a_sink_is_broken() -> None:
    class Broken(GatedSink):
        def offer(self, entries: Any) -> None:
            raise RuntimeError("bug")

    healthy = GatedSink()
    fanout = SinkFanout([Broken(), healthy])
    fanout.start()
    fanout.offer([make_entry(0)])
    assert [e.seq for e in await take(healthy.delivered, 1)] == [0]
    await fanout.aclose()


# -- AuditLog integration --------------------------------------------------------------------------


@pytest.fixture
async def store() -> AsyncIterator[Any]:
    store = await open_store("sqlite:///:memory:")
    try:
        yield store
    finally:
        await store.aclose()


async def test_sinks_receive_exactly_the_committed_records_when_the_log_appends(store: Any) -> None:
    sink = GatedSink()
    log = AuditLog(store, origin=ORIGIN, signing_key=generate_signing_key(ORIGIN), checkpoints=QUIET,
                   sinks=SinkFanout([sink]))
    await log.start()
    receipts = await asyncio.gather(*(log.append(AuditEvent(kind=EventKind.REQUEST, name=f"t{i}")) for i in range(5)))
    delivered = await take(sink.delivered, 5)
    await log.aclose()
    stored = await store.fetch_entries(ORIGIN, 0, 5)
    assert delivered == stored
    assert [e.leaf_hash for e in delivered] == [r.leaf_hash for r in receipts]


async def test_appends_complete_when_the_sink_is_stuck(store: Any) -> None:
    sink = GatedSink(max_buffer_records=2, max_batch_records=1)
    sink.gate = asyncio.Event()  # the receiver never answers
    sink._drain_timeout_s = 0.05
    log = AuditLog(store, origin=ORIGIN, signing_key=generate_signing_key(ORIGIN), checkpoints=QUIET,
                   sinks=SinkFanout([sink]))
    await log.start()
    async with asyncio.timeout(WAIT_S):
        for i in range(10):
            receipt = await log.append(AuditEvent(kind=EventKind.REQUEST, name=f"t{i}"))
            assert receipt.durable and receipt.seq == i
        await log.aclose()
    assert log.stats.records_committed == 10
    assert sink.stats.records_sent == 0
    assert sink.stats.records_dropped == 10  # 1 in flight + 2 buffered cut at close, 7 never fit


async def test_from_settings_builds_the_sinks_when_audit_sinks_lists_them(
    store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SINK_TEST_KEY", render_signing_key(generate_signing_key(ORIGIN)))
    path = tmp_path / "copy.jsonl"
    settings = AuditSettings(signing_key_env="SINK_TEST_KEY", origin=ORIGIN,
                             sinks=[{"type": "jsonl", "path": str(path)}])
    async with httpx.AsyncClient() as client:
        log = AuditLog.from_settings(store, settings, http_client=client)
        assert log.sinks is not None and [s.name for s in log.sinks.sinks] == ["jsonl"]
        await log.start()
        await log.append(AuditEvent(kind=EventKind.GATEWAY_STARTED, detail={"note": HOSTILE}))
        await log.aclose()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1  # checkpoints are not records; only the one append is copied
    assert json.loads(lines[0])["record"]["detail"]["note"] == HOSTILE


# -- OTLP ------------------------------------------------------------------------------------------


class OtlpReceiver:
    """A loopback OTLP/HTTP collector: queues (path, headers, JSON body) and answers ``status``."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[tuple[str, dict[str, str], Any]] = asyncio.Queue()
        self.status = 200

        async def logs(request: Request) -> Response:
            self.requests.put_nowait((request.url.path, dict(request.headers), await request.json()))
            return Response(b"{}", status_code=self.status, media_type="application/json")

        self.app = Starlette(routes=[Route("/v1/logs", logs, methods=["POST"])])


@pytest.fixture
async def otlp() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    receiver = OtlpReceiver()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(receiver.app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(WAIT_S):
            while not server.started:  # uvicorn exposes no event; bounded poll on the loop
                await asyncio.sleep(0.01)
        yield receiver, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(WAIT_S):
            await task
        sock.close()


async def test_otlp_sink_posts_log_records_when_records_are_committed(otlp: tuple[OtlpReceiver, str]) -> None:
    receiver, url = otlp
    settings = OtlpSinkSettings(type="otlp", endpoint=url + "/", headers={"authorization": "Bearer s3cret"},
                                service_name="bastion-test")
    async with httpx.AsyncClient() as client:
        sink = OtlpSink(settings, client)
        sink.start()
        sink.offer([make_entry(0), make_entry(1, outcome="denied")])
        path, headers, body = (await take(receiver.requests, 1))[0]
        await sink.aclose()
    assert path == "/v1/logs"
    assert headers["authorization"] == "Bearer s3cret" and headers["content-type"] == "application/json"
    (resource_logs,) = body["resourceLogs"]
    assert resource_logs["resource"]["attributes"] == [{"key": "service.name", "value": {"stringValue": "bastion-test"}}]
    (scope_logs,) = resource_logs["scopeLogs"]
    first, second = scope_logs["logRecords"]
    assert first["timeUnixNano"] == "1795564741123000000"  # 2026-11-24T23:59:01.123Z, int64 as a string
    assert (first["severityText"], second["severityText"]) == ("INFO", "WARN")
    assert (first["traceId"], first["spanId"]) == (TRACE_ID, SPAN_ID)
    assert json.loads(first["body"]["stringValue"])["seq"] == 0
    attributes = {a["key"]: a["value"] for a in second["attributes"]}
    assert attributes["bastion.seq"] == {"intValue": "1"}
    assert attributes["bastion.outcome"] == {"stringValue": "denied"}
    assert attributes["bastion.leaf_hash"] == {"stringValue": make_entry(1, outcome="denied").leaf_hash.hex()}
    assert sink.stats.records_sent == 2


async def test_otlp_failure_is_counted_when_the_collector_answers_503(otlp: tuple[OtlpReceiver, str]) -> None:
    receiver, url = otlp
    receiver.status = 503
    async with httpx.AsyncClient() as client:
        sink = OtlpSink(OtlpSinkSettings(type="otlp", endpoint=url), client)
        sink.start()
        sink.offer([make_entry(0)])
        await take(receiver.requests, 1)
        await sink.aclose()
    assert (sink.stats.delivery_failures, sink.stats.records_dropped, sink.stats.records_sent) == (1, 1, 0)


# -- syslog ----------------------------------------------------------------------------------------


def parse_rfc5424(message: bytes) -> tuple[str, list[str], bytes]:
    """Split ``<PRI>1 TS HOST APP PROCID MSGID [SD] MSG`` into (pri, header fields, MSG)."""
    header, sep, msg = message.partition(b"] \xef\xbb\xbf")
    assert sep, message
    fields = header.decode("ascii").split(" ", 6)
    return fields[0], fields, msg


def test_syslog_message_has_no_raw_line_break_when_the_record_holds_one() -> None:
    entry = make_entry(3, text=HOSTILE, outcome="denied")
    message = render_syslog_message(entry, facility=13, app_name="bastion", hostname="gw 1\n",
                                    procid="42", max_message_bytes=8192)
    for bad in (b"\n", b"\r", "\u2028".encode(), "\x85".encode(), b"\x7f"):
        assert bad not in message
    pri, fields, msg = parse_rfc5424(message)
    assert pri == "<108>1"  # facility 13 * 8 + severity 4 (warning, for a denial)
    assert fields[1:6] == ["2026-11-24T23:59:01.123Z", "gw_1_", "bastion", "42", "response"]
    assert fields[6] == f'[bastion@32473 origin="{ORIGIN}" seq="3" leaf_hash="{entry.leaf_hash.hex()}"'
    assert json.loads(msg) == json.loads(entry.body)


def test_syslog_message_carries_a_summary_when_the_record_is_too_large() -> None:
    entry = make_entry(4, pad=10_000)
    message = render_syslog_message(entry, facility=13, app_name="bastion", hostname="gw",
                                    procid="1", max_message_bytes=2048)
    assert len(message) <= 2048
    summary = json.loads(parse_rfc5424(message)[2])
    assert summary == {"origin": ORIGIN, "seq": 4, "time": entry.time, "kind": "response", "outcome": "ok",
                       "leaf_hash": entry.leaf_hash.hex(), "truncated": True}


async def test_syslog_udp_sink_sends_one_datagram_per_record_when_records_are_committed() -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            received.put_nowait(data)

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        sink = SyslogSink(SyslogSinkSettings(type="syslog", host="127.0.0.1", port=port))
        sink.start()
        sink.offer([make_entry(0, text=HOSTILE), make_entry(1)])
        datagrams = await take(received, 2)
        await sink.aclose()
    finally:
        transport.close()
    assert [json.loads(parse_rfc5424(d)[2])["seq"] for d in datagrams] == [0, 1]
    assert all(b"\n" not in d for d in datagrams)
    assert parse_rfc5424(datagrams[0])[0] == "<110>1"  # 13 * 8 + 6 (informational)
    assert sink.stats.records_sent == 2


async def test_syslog_tcp_sink_frames_by_octet_count_when_records_are_committed() -> None:
    frames: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                length = int((await reader.readuntil(b" "))[:-1])
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            frames.put_nowait(await reader.readexactly(length))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        sink = SyslogSink(SyslogSinkSettings(type="syslog", host="127.0.0.1", port=port, protocol="tcp"))
        sink.start()
        sink.offer([make_entry(i, text=HOSTILE) for i in range(3)])
        got = await take(frames, 3)
        await sink.aclose()
    finally:
        server.close()
        await server.wait_closed()
    assert [json.loads(parse_rfc5424(f)[2])["result"]["released"] for f in got] == [HOSTILE] * 3
    assert sink.stats.records_sent == 3


async def test_syslog_tcp_failure_is_counted_when_nothing_listens() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = SyslogSink(SyslogSinkSettings(type="syslog", host="127.0.0.1", port=port, protocol="tcp", timeout_s=1))
    sink.start()
    sink.offer([make_entry(0)])
    await sink.aclose()
    assert (sink.stats.delivery_failures, sink.stats.records_dropped, sink.stats.records_sent) == (1, 1, 0)
