"""Audit sinks: settings, the JSON Lines, OTLP/HTTP JSON and RFC 5424 syslog transports, and the writer.

Receivers are real loopback sockets (an in-loop uvicorn for OTLP, asyncio UDP/TCP servers for
syslog), including ones that refuse connections, accept and never answer, or never read: what a
sink counts as sent or dropped is checked against each. Every wait is bounded; synchronisation is
on events and queues, never sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import fcntl
import json
import os
import resource
import signal
import socket
import struct
import termios
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
import uvicorn
from sink_rig import (
    HOSTILE,
    ORIGIN,
    SPAN_ID,
    TRACE_ID,
    WAIT_S,
    GatedSink,
    drained,
    make_entry,
    parse_rfc5424,
    records,
    sink_log_records,
    take,
    wait_until,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bastion.audit.sinks import delivery as sink_delivery
from bastion.audit.keys import generate_signing_key, render_signing_key
from bastion.audit.log import AuditLog, CheckpointPolicy
from bastion.audit.record import AuditEvent, EventKind
from bastion.audit.settings import AuditSettings
from bastion.audit.sinks.format import SinkRecord, render_json_line
from bastion.audit.sinks import (
    JsonLinesSink,
    JsonLinesSinkSettings,
    OtlpSink,
    OtlpSinkSettings,
    SinkFanout,
    SyslogSink,
    SyslogSinkSettings,
)
from bastion.audit.sinks.network import _retry_after_s
from bastion.storage import open_store

pytestmark = pytest.mark.anyio

QUIET = CheckpointPolicy(every_records=1_000_000, every_s=3600, heartbeat_s=3600)


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


# -- JSON Lines ------------------------------------------------------------------------------------


async def test_jsonl_sink_writes_one_line_per_record_when_values_hold_newlines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonLinesSink(JsonLinesSinkSettings(type="jsonl", path=str(path)))
    sink.start()
    entries = [make_entry(0, text=HOSTILE), make_entry(1)]
    sink.offer(records(*entries))
    await sink.aclose()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["record"]["result"]["released"] == HOSTILE
    assert (first["origin"], first["seq"], first["leaf_hash"]) == (ORIGIN, 0, entries[0].leaf_hash.hex())
    assert sink.stats.records_sent == 2 and sink.stats.records_dropped == 0


async def test_jsonl_sink_writes_to_stdout_when_path_is_dash(capsys: pytest.CaptureFixture[str]) -> None:
    sink = JsonLinesSink(JsonLinesSinkSettings(type="jsonl"))
    sink.start()
    sink.offer(records(make_entry(7)))
    await sink.aclose()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and json.loads(out[0])["seq"] == 7


async def test_jsonl_sink_holds_the_records_until_shutdown_when_the_file_refuses_every_write() -> None:
    # Every write to /dev/full fails with ENOSPC: retried, so the records are dropped only at shutdown.
    sink = JsonLinesSink(JsonLinesSinkSettings(type="jsonl", path="/dev/full", drain_timeout_s=0.3))
    sink.start()
    sink.offer(records(make_entry(0), make_entry(1)))
    with sink_log_records() as sink_log:
        await sink.aclose()
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (0, 2)
    assert sink.stats.delivery_failures >= 1
    (drop,) = [r for r in drained(sink_log) if "records_dropped" in vars(r)]
    assert "(2 cut at shutdown)" in drop.getMessage()


def pipe_bytes(fd: int) -> int:
    """Bytes waiting in a pipe (FIONREAD on its read end)."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


async def test_jsonl_sink_finishes_a_torn_line_and_loses_nothing_when_the_reader_of_its_pipe_comes_back(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "shipper"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a log shipper that has not read yet
    entries = [make_entry(0), make_entry(1, pad=200_000), make_entry(2), make_entry(3)]
    first_line, long_line = (len(render_json_line(r).encode()) for r in records(*entries[:2]))
    assert long_line > fcntl.fcntl(reader, fcntl.F_GETPIPE_SZ)  # its write cannot end while nobody reads
    sink = JsonLinesSink(JsonLinesSinkSettings(type="jsonl", path=str(fifo), drain_timeout_s=WAIT_S))
    sink.offer(records(*entries))
    sink.start()
    received = b""
    try:
        await wait_until(lambda: pipe_bytes(reader) > first_line, "part of the long line in the pipe")
        os.close(reader)  # the shipper goes away: the write stops inside the long line
        reader = -1
        await wait_until(lambda: sink.stats.delivery_failures >= 1, "the write failed")
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # it comes back and reads
        async with asyncio.timeout(WAIT_S):
            while received.count(b"\n") < len(entries):
                try:
                    chunk = os.read(reader, 1 << 20)
                except BlockingIOError:
                    chunk = b""
                received += chunk
                if not chunk:  # empty, or no writer has it open (EOF)
                    await asyncio.sleep(0.01)
        await sink.aclose()
    finally:
        if reader >= 0:
            os.close(reader)
    assert [json.loads(line)["seq"] for line in received.splitlines()] == [0, 1, 2, 3]  # none torn, none twice
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (4, 0)
    assert sink.stats.delivery_failures >= 1


def jsonl_lines(*seqs: int) -> list[bytes]:
    """The lines a JSON Lines sink writes for ``make_entry(seq)`` of each seq (one digit: all of a length)."""
    return [render_json_line(record).encode() for record in records(*(make_entry(seq) for seq in seqs))]


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[Callable[[int], None]]:
    """While the block runs, a file this process writes cannot grow past ``limit`` bytes (RLIMIT_FSIZE).

    A write across the limit takes what fits, the next fails with EFBIG, as on a full disk (Python ignores
    SIGXFSZ, which would otherwise end the process). Yields a function that moves the limit.
    """
    assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield lambda new_limit: resource.setrlimit(resource.RLIMIT_FSIZE, (new_limit, hard))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


async def test_jsonl_sink_ends_a_torn_line_at_shutdown_when_the_file_stays_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sink_delivery, "RETRY_FIRST_S", 3600.0)  # after the failure the worker only waits
    path = tmp_path / "audit.jsonl"
    lines = jsonl_lines(0, 1)
    sink = JsonLinesSink(JsonLinesSinkSettings(type="jsonl", path=str(path), drain_timeout_s=0.1))
    with file_size_limit(len(lines[0]) + 10) as set_limit:  # the second line is cut after 10 bytes
        sink.offer(records(make_entry(0), make_entry(1)))
        sink.start()
        await wait_until(lambda: sink.stats.delivery_failures == 1, "the write failed")
        set_limit(len(lines[0]) + 11)  # room for the line break that ends the fragment
        await sink.aclose()
    assert path.read_bytes() == lines[0] + lines[1][:10] + b"\n"  # so a later line starts whole
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (1, 1)


async def test_jsonl_sink_writes_to_a_new_file_when_its_file_is_renamed_between_batches(tmp_path: Path) -> None:
    path, rotated = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"
    lines = jsonl_lines(0, 1, 2)
    sink = JsonLinesSink(JsonLinesSinkSettings(type="jsonl", path=str(path)))
    sink.start()
    sink.offer(records(make_entry(0)))
    await wait_until(lambda: sink.stats.records_sent == 1, "the first line written")
    path.rename(rotated)  # logrotate's default ("create"): the file moves away, and no signal tells the sink
    sink.offer(records(make_entry(1), make_entry(2)))
    await sink.aclose()
    assert rotated.read_bytes() == lines[0]
    assert path.read_bytes() == lines[1] + lines[2]


async def test_jsonl_sink_creates_its_file_again_when_it_is_deleted_while_full(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = jsonl_lines(0, 1, 2, 3)
    sink = JsonLinesSink(JsonLinesSinkSettings(type="jsonl", path=str(path)))
    with file_size_limit(2 * len(lines[0])):  # full after two whole lines; a new file takes two more
        sink.offer(records(*(make_entry(seq) for seq in range(4))))
        sink.start()
        await wait_until(lambda: sink.stats.delivery_failures >= 1, "a write refused")
        assert path.read_bytes() == lines[0] + lines[1]
        path.unlink()  # to free the disk; the sink's open descriptor would keep the file's space, and stay full
        await wait_until(lambda: sink.stats.records_sent == 4, "the other two written")
    await sink.aclose()
    assert path.read_bytes() == lines[2] + lines[3]
    assert sink.stats.records_dropped == 0


async def test_jsonl_sink_writes_a_torn_line_whole_in_the_new_file_when_the_full_file_is_rotated(
    tmp_path: Path,
) -> None:
    path, rotated = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"
    lines = jsonl_lines(0, 1, 2)
    sink = JsonLinesSink(JsonLinesSinkSettings(type="jsonl", path=str(path)))
    with file_size_limit(len(lines[0]) + 10) as set_limit:  # EFBIG with the second line 10 bytes out
        sink.offer(records(*(make_entry(seq) for seq in range(3))))
        sink.start()
        await wait_until(lambda: sink.stats.delivery_failures >= 1, "a write refused")
        path.rename(rotated)
        set_limit(resource.RLIM_INFINITY)
        await wait_until(lambda: sink.stats.records_sent == 3, "the rest written")
    await sink.aclose()
    # The rest of the torn line could only follow it in the file it was started in: that one keeps the
    # unterminated fragment, and the new file gets the line whole.
    assert rotated.read_bytes() == lines[0] + lines[1][:10]
    assert path.read_bytes() == lines[1] + lines[2]
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (3, 0)


async def test_jsonl_sink_writes_a_torn_line_whole_when_its_file_is_truncated_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # copytruncate rotation keeps the inode: only the file's size tells that the fragment is gone (a
    # new file reusing a deleted one's inode looks the same).
    monkeypatch.setattr(sink_delivery, "RETRY_FIRST_S", 0.3)
    path = tmp_path / "audit.jsonl"
    lines = jsonl_lines(0, 1, 2)
    sink = JsonLinesSink(JsonLinesSinkSettings(type="jsonl", path=str(path)))
    with file_size_limit(len(lines[0]) + 10) as set_limit:  # EFBIG with the second line 10 bytes out
        sink.offer(records(*(make_entry(seq) for seq in range(3))))
        sink.start()
        await wait_until(lambda: sink.stats.delivery_failures >= 1, "a write refused")
        inode = path.stat().st_ino
        os.truncate(path, 0)
        set_limit(resource.RLIM_INFINITY)
        await wait_until(lambda: sink.stats.records_sent == 3, "the rest written")
    await sink.aclose()
    assert path.stat().st_ino == inode
    assert path.read_bytes() == lines[1] + lines[2]  # no line's tail at the top of the file


async def test_jsonl_sink_shutdown_creates_no_file_when_the_torn_line_was_rotated_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_delivery, "RETRY_FIRST_S", 3600.0)  # after the failure the sink only waits
    path, rotated = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"
    lines = jsonl_lines(0, 1)
    sink = JsonLinesSink(JsonLinesSinkSettings(type="jsonl", path=str(path), drain_timeout_s=0.2))
    with file_size_limit(len(lines[0]) + 10):
        sink.offer(records(make_entry(0), make_entry(1)))
        sink.start()
        await wait_until(lambda: sink.stats.delivery_failures == 1, "a write refused")
        path.rename(rotated)
        await sink.aclose()
    assert not path.exists()
    assert rotated.read_bytes() == lines[0] + lines[1][:10]


class DeadAfter:
    """An open file whose descriptor takes ``room`` bytes, then fails every write with EIO for good, as one a
    soft NFS mount gave up on (or a stale handle) does."""

    def __init__(self, file: Any, room: int) -> None:
        self.file = file
        self.room = room

    def write(self, chunk: bytes | memoryview) -> int:
        if not self.room:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        count: int = self.file.write(chunk[:self.room])
        self.room -= count
        return count

    def fileno(self) -> int:
        return int(self.file.fileno())

    def close(self) -> None:
        self.file.close()


class FlakyMount:
    """The sink's path on a mount where the first file opened dies after ``room`` bytes; later opens work."""

    def __init__(self, path: Path, room: int) -> None:
        self.path = path
        self.room = room
        self.opened = 0

    def __fspath__(self) -> str:
        return str(self.path)

    def open(self, mode: str, buffering: int) -> Any:
        self.opened += 1
        file = self.path.open(mode, buffering=buffering)
        return DeadAfter(file, self.room) if self.opened == 1 else file


async def test_jsonl_sink_finishes_a_torn_line_on_a_new_descriptor_when_the_old_one_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "audit.jsonl"
    lines = jsonl_lines(0, 1, 2)
    mount = FlakyMount(path, room=len(lines[0]) + 10)
    sink = JsonLinesSink(JsonLinesSinkSettings(type="jsonl", path=str(path)))
    monkeypatch.setattr(sink, "_path", mount)
    sink.offer(records(*(make_entry(seq) for seq in range(3))))
    sink.start()
    await wait_until(lambda: sink.stats.records_sent == 3, "every line written")
    await sink.aclose()
    assert path.read_bytes() == b"".join(lines)  # the same file: its torn line finished, none repeated
    assert mount.opened == 2 and sink.stats.delivery_failures == 1


async def test_records_are_parsed_once_off_the_loop_when_several_sinks_copy_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed_on: list[tuple[int, int]] = []
    parse = SinkRecord._parse

    def counting_parse(record: SinkRecord) -> str:
        parsed_on.append((record.entry.seq, threading.get_ident()))
        return parse(record)

    monkeypatch.setattr(SinkRecord, "_parse", counting_parse)
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            received.put_nowait(data)

    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    paths = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    fanout = SinkFanout([JsonLinesSink(JsonLinesSinkSettings(type="jsonl", path=str(path))) for path in paths]
                        + [SyslogSink(SyslogSinkSettings(type="syslog", host="127.0.0.1", port=port))])
    try:
        fanout.start()
        fanout.offer([make_entry(i, text=HOSTILE) for i in range(3)])
        await take(received, 3)
        await fanout.aclose()
    finally:
        transport.close()
    assert sorted(seq for seq, _ in parsed_on) == [0, 1, 2]  # three sinks, one parse per record
    assert threading.get_ident() not in {thread for _, thread in parsed_on}
    assert [len(path.read_text(encoding="utf-8").splitlines()) for path in paths] == [3, 3]


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
    sink = GatedSink(max_buffer_records=2, max_batch_records=1, drain_timeout_s=0.05)
    sink.gate = asyncio.Event()  # the receiver never answers
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

async def append_quickly(log: AuditLog, count: int) -> None:
    """Append ``count`` records within WAIT_S (far below the sinks' timeouts here): no append waited for a sink."""
    await log.start()
    async with asyncio.timeout(WAIT_S):
        for i in range(count):
            receipt = await log.append(AuditEvent(kind=EventKind.REQUEST, name=f"t{i}"))
            assert receipt.durable and receipt.seq == i


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
    """A loopback OTLP/HTTP collector: queues (path, headers, JSON body) and answers ``status`` and ``answer``.

    ``script`` holds (status, headers) answers for the next requests, before the default takes over;
    ``times`` has each request's arrival on the loop's clock.
    """

    def __init__(self) -> None:
        self.requests: asyncio.Queue[tuple[str, dict[str, str], Any]] = asyncio.Queue()
        self.status = 200
        self.answer = b"{}"
        self.script: list[tuple[int, dict[str, str]]] = []
        self.times: list[float] = []

        async def logs(request: Request) -> Response:
            self.times.append(asyncio.get_running_loop().time())
            self.requests.put_nowait((request.url.path, dict(request.headers), await request.json()))
            if self.script:
                status, headers = self.script.pop(0)
                return Response(b"{}", status_code=status, headers=headers, media_type="application/json")
            return Response(self.answer, status_code=self.status, media_type="application/json")

        self.app = Starlette(routes=[Route("/v1/logs", logs, methods=["POST"])])


def logged_seqs(body: Any) -> list[int]:
    """The record seqs an OTLP export carries, in order."""
    (resource_logs,) = body["resourceLogs"]
    (scope_logs,) = resource_logs["scopeLogs"]
    return [json.loads(record["body"]["stringValue"])["seq"] for record in scope_logs["logRecords"]]


@contextlib.asynccontextmanager
async def serving(receiver: OtlpReceiver, sock: socket.socket) -> AsyncIterator[str]:
    """Run ``receiver`` in an in-loop uvicorn on the bound ``sock``; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(receiver.app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(WAIT_S):
            while not server.started:  # uvicorn exposes no event; bounded poll on the loop
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(WAIT_S):
            await task


@pytest.fixture
async def otlp() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    receiver = OtlpReceiver()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        async with serving(receiver, sock) as url:
            yield receiver, url


async def test_otlp_sink_posts_log_records_when_records_are_committed(otlp: tuple[OtlpReceiver, str]) -> None:
    receiver, url = otlp
    settings = OtlpSinkSettings(type="otlp", endpoint=url + "/", headers={"authorization": "Bearer s3cret"},
                                service_name="bastion-test")
    async with httpx.AsyncClient() as client:
        sink = OtlpSink(settings, client)
        sink.start()
        sink.offer(records(make_entry(0), make_entry(1, outcome="denied")))
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


async def test_otlp_retries_after_the_wait_the_collector_asks_for_when_it_answers_503(
    otlp: tuple[OtlpReceiver, str],
) -> None:
    receiver, url = otlp
    receiver.script = [(503, {"retry-after": "1"})]  # the backoff alone would wait 0.1 s
    async with httpx.AsyncClient() as client:
        sink = OtlpSink(OtlpSinkSettings(type="otlp", endpoint=url), client)
        sink.offer(records(*(make_entry(i) for i in range(3))))
        sink.start()
        exports = await take(receiver.requests, 3)
        await sink.aclose()
    assert [logged_seqs(body) for _, _, body in exports] == [[0, 1, 2], [0], [1, 2]]  # the retry probes with one
    assert receiver.times[1] - receiver.times[0] >= 0.95
    assert (sink.stats.records_sent, sink.stats.records_dropped, sink.stats.delivery_failures) == (3, 0, 1)


@pytest.mark.parametrize("status", [429, 502, 504])
async def test_otlp_retries_the_batch_when_the_collector_answers_a_retryable_status(
    otlp: tuple[OtlpReceiver, str], status: int,
) -> None:
    receiver, url = otlp
    receiver.script = [(status, {})]
    async with httpx.AsyncClient() as client:
        sink = OtlpSink(OtlpSinkSettings(type="otlp", endpoint=url), client)
        sink.offer(records(make_entry(0), make_entry(1)))
        sink.start()
        exports = await take(receiver.requests, 3)
        await sink.aclose()
    assert [logged_seqs(body) for _, _, body in exports] == [[0, 1], [0], [1]]
    assert (sink.stats.records_sent, sink.stats.records_dropped, sink.stats.delivery_failures) == (2, 0, 1)


async def test_otlp_drops_the_batch_and_sends_the_next_whole_when_the_collector_answers_400(
    otlp: tuple[OtlpReceiver, str],
) -> None:
    receiver, url = otlp
    receiver.script = [(400, {})]  # bad data: the specification forbids sending it again
    async with httpx.AsyncClient() as client:
        sink = OtlpSink(OtlpSinkSettings(type="otlp", endpoint=url), client)
        with sink_log_records() as sink_log:
            sink.offer(records(make_entry(0), make_entry(1)))
            sink.start()
            await take(receiver.requests, 1)
            (drop,) = await take(sink_log.records, 1)
            sink.offer(records(*(make_entry(i) for i in range(2, 5))))
            exports = await take(receiver.requests, 1)
            await sink.aclose()
    assert "(2 delivery failed: HTTP 400)" in drop.getMessage()
    assert [logged_seqs(body) for _, _, body in exports] == [[2, 3, 4]]  # the collector answered: no probe
    assert (sink.stats.records_sent, sink.stats.records_dropped, sink.stats.delivery_failures) == (3, 2, 1)


async def test_otlp_delivers_everything_in_order_when_the_collector_comes_up_after_refusing_connections() -> None:
    receiver = OtlpReceiver()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused until it serves
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with httpx.AsyncClient() as client:
            sink = OtlpSink(OtlpSinkSettings(type="otlp", endpoint=url, timeout_s=WAIT_S), client)
            sink.offer(records(*(make_entry(i) for i in range(3))))
            sink.start()
            await wait_until(lambda: sink.stats.delivery_failures >= 1, "a refused export")
            sink.offer(records(*(make_entry(i) for i in range(3, 5))))
            async with serving(receiver, sock):
                seqs: list[int] = []
                while len(seqs) < 5:
                    seqs += logged_seqs((await take(receiver.requests, 1))[0][2])
                await sink.aclose()
    assert seqs == [0, 1, 2, 3, 4]
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (5, 0)


def test_retry_after_is_read_when_given_in_seconds_or_as_an_http_date() -> None:
    assert _retry_after_s("7") == 7.0
    in_30_s = _retry_after_s(email.utils.formatdate(time.time() + 30, usegmt=True))
    assert in_30_s is not None and 25 < in_30_s <= 31
    assert _retry_after_s(None) is None and _retry_after_s("soon") is None and _retry_after_s("-3") is None


async def test_otlp_counts_rejected_records_dropped_when_the_collector_reports_partial_success(
    otlp: tuple[OtlpReceiver, str],
) -> None:
    receiver, url = otlp
    receiver.answer = b'{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"too old"}}'
    async with httpx.AsyncClient() as client:
        sink = OtlpSink(OtlpSinkSettings(type="otlp", endpoint=url), client)
        sink.start()
        sink.offer(records(*(make_entry(i) for i in range(3))))
        await take(receiver.requests, 1)
        await sink.aclose()
    assert (sink.stats.records_sent, sink.stats.records_dropped, sink.stats.delivery_failures) == (1, 2, 1)


@pytest.fixture
async def silent_collector() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A real HTTP listener that accepts and reads requests but never answers; the event marks a request read."""
    request_read = asyncio.Event()
    release = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        request_read.set()
        await release.wait()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", request_read
    finally:
        release.set()
        server.close()
        await server.wait_closed()


def free_port() -> int:
    """A port that was free a moment ago and has no listener."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dead_collector_sink(url: str, client: httpx.AsyncClient) -> OtlpSink:
    """An OTLP sink whose timeout (60 s) dwarfs WAIT_S, with a small buffer and a short drain."""
    return OtlpSink(OtlpSinkSettings(type="otlp", endpoint=url, timeout_s=60, max_buffer_records=5,
                                     drain_timeout_s=0.05), client)


async def test_appends_are_not_delayed_when_the_otlp_collector_never_answers(
    store: Any, silent_collector: tuple[str, asyncio.Event]
) -> None:
    url, request_read = silent_collector
    async with httpx.AsyncClient() as client:
        sink = dead_collector_sink(url, client)
        log = AuditLog(store, origin=ORIGIN, signing_key=generate_signing_key(ORIGIN), checkpoints=QUIET,
                       sinks=SinkFanout([sink]))
        await append_quickly(log, 20)
        async with asyncio.timeout(WAIT_S):
            await request_read.wait()  # the sink is stuck in a real request, not merely idle
        await log.aclose()
    assert log.stats.records_committed == 20
    # The 5 held (1 of them in flight) are cut at shutdown, 15 never fitted; a cut request is no failure.
    assert (sink.stats.records_sent, sink.stats.records_dropped, sink.stats.delivery_failures) == (0, 20, 0)


async def test_appends_are_not_delayed_when_the_otlp_collector_refuses_connections(store: Any) -> None:
    async with httpx.AsyncClient() as client:
        sink = dead_collector_sink(f"http://127.0.0.1:{free_port()}", client)
        log = AuditLog(store, origin=ORIGIN, signing_key=generate_signing_key(ORIGIN), checkpoints=QUIET,
                       sinks=SinkFanout([sink]))
        await append_quickly(log, 20)
        await log.aclose()
    assert log.stats.records_committed == 20
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (0, 20)
    assert sink.stats.delivery_failures >= 1


# -- syslog ----------------------------------------------------------------------------------------


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
        sink.offer(records(make_entry(0, text=HOSTILE), make_entry(1)))
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
        sink.offer(records(*(make_entry(i, text=HOSTILE) for i in range(3))))
        got = await take(frames, 3)
        await sink.aclose()
    finally:
        server.close()
        await server.wait_closed()
    assert [json.loads(parse_rfc5424(f)[2])["result"]["released"] for f in got] == [HOSTILE] * 3
    assert sink.stats.records_sent == 3


async def test_syslog_tcp_holds_the_records_until_shutdown_when_nothing_listens() -> None:
    sink = SyslogSink(SyslogSinkSettings(type="syslog", host="127.0.0.1", port=free_port(), protocol="tcp",
                                         timeout_s=1, drain_timeout_s=0.3))
    sink.start()
    sink.offer(records(make_entry(0)))
    await wait_until(lambda: sink.stats.delivery_failures >= 1, "a refused connection")
    with sink_log_records() as sink_log:
        await sink.aclose()
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (0, 1)
    (drop,) = [r for r in drained(sink_log) if "records_dropped" in vars(r)]
    assert "(1 cut at shutdown)" in drop.getMessage()


async def test_syslog_tcp_delivers_everything_in_order_when_the_receiver_comes_up() -> None:
    frames: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                length = int((await reader.readuntil(b" "))[:-1])
                frames.put_nowait(await reader.readexactly(length))
        writer.close()

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused until it serves
    sink = SyslogSink(SyslogSinkSettings(type="syslog", host="127.0.0.1", port=sock.getsockname()[1],
                                         protocol="tcp", timeout_s=WAIT_S))
    sink.offer(records(*(make_entry(i) for i in range(3))))
    sink.start()
    await wait_until(lambda: sink.stats.delivery_failures >= 1, "a refused connection")
    sink.offer(records(*(make_entry(i) for i in range(3, 6))))
    server = await asyncio.start_server(handle, sock=sock)
    try:
        got = await take(frames, 6)
        await sink.aclose()
    finally:
        server.close()
        await server.wait_closed()
    assert [json.loads(parse_rfc5424(frame)[2])["seq"] for frame in got] == [0, 1, 2, 3, 4, 5]
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (6, 0)


async def test_syslog_udp_retries_a_refused_datagram_when_nothing_listens() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = SyslogSink(SyslogSinkSettings(type="syslog", host="127.0.0.1", port=port, max_batch_records=3,
                                         drain_timeout_s=WAIT_S))
    sink.offer(records(*(make_entry(i) for i in range(3))))
    sink.start()
    await sink.aclose()
    # An ICMP port-unreachable fails the next send, whose datagram is not sent: it waits for the retry,
    # not dropped. The refused datagram itself had been taken by the kernel, so it counts as sent.
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (3, 0)
    assert sink.stats.delivery_failures >= 1


async def test_syslog_tcp_counts_as_sent_only_what_was_acknowledged_when_the_receiver_never_reads() -> None:
    # One connection is accepted and never read: its kernel still acknowledges what fits in its receive
    # buffer (set small here; accepted sockets inherit it). Then the listener goes: retries are refused.
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        receive_buffer = listener.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        settings = SyslogSinkSettings(type="syslog", host="127.0.0.1", port=listener.getsockname()[1],
                                      protocol="tcp", timeout_s=0.3, max_batch_records=20, drain_timeout_s=1.0)
        sink = SyslogSink(settings)
        entries = [make_entry(i, pad=3_000) for i in range(20)]
        sink.offer(records(*entries))
        sink.start()
        async with asyncio.timeout(WAIT_S):
            connection, _ = await asyncio.get_running_loop().sock_accept(listener)
    with connection:
        await sink.aclose()  # the batch's acknowledgement times out; the rest is retried until the drain ends
    stats = sink.stats
    assert stats.records_sent + stats.records_dropped == 20 and stats.delivery_failures >= 1
    message_bytes = len(sink._render(SinkRecord(entries[0])))
    frame_bytes = len(f"{message_bytes} ") + message_bytes  # RFC 6587 octet counting
    assert 20 * frame_bytes > receive_buffer and stats.records_dropped >= 1
    # Counted as sent: only whole frames the receiving host's TCP acknowledged into that buffer.
    assert stats.records_sent * frame_bytes <= receive_buffer


def whole_frames(stream: bytes) -> list[int]:
    """The seqs of the whole RFC 6587 frames in what one connection carried; a frame cut short at its end is no record."""
    seqs: list[int] = []
    while b" " in stream:
        length, _, rest = stream.partition(b" ")
        if len(rest) < int(length):
            break
        seqs.append(json.loads(parse_rfc5424(rest[:int(length)])[2])["seq"])
        stream = rest[int(length):]
    return seqs


async def read_to_the_end(connection: socket.socket) -> bytes:
    """What the peer sent on ``connection`` up to its close or reset; fails if that takes longer than WAIT_S."""
    loop, data = asyncio.get_running_loop(), b""
    async with asyncio.timeout(WAIT_S):
        while True:
            try:
                chunk = await loop.sock_recv(connection, 1 << 16)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


async def test_syslog_tcp_sends_nothing_more_on_a_connection_it_gave_up_when_the_receiver_stalls() -> None:
    # The receiver stops reading (a small receive buffer: accepted sockets inherit it) for longer than
    # timeout_s, so the sink gives the connection up and sends the unacknowledged frames on a new one.
    # When the receiver reads again, the old connection must hold nothing the new one repeats.
    loop = asyncio.get_running_loop()
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
        listener.bind(("127.0.0.1", 0))
        listener.listen(2)
        listener.setblocking(False)
        sink = SyslogSink(SyslogSinkSettings(type="syslog", host="127.0.0.1", port=listener.getsockname()[1],
                                             protocol="tcp", timeout_s=1.0, max_batch_records=40,
                                             drain_timeout_s=WAIT_S))
        sink.offer(records(*(make_entry(seq, pad=3_000) for seq in range(40))))
        sink.start()
        async with asyncio.timeout(WAIT_S):
            first, _ = await loop.sock_accept(listener)  # not read until the sink has reconnected
            second, _ = await loop.sock_accept(listener)
        with first, second:
            old = whole_frames(await read_to_the_end(first))  # a receiver that takes its connections in turn
            stream, new = b"", []
            async with asyncio.timeout(WAIT_S):
                while 39 not in new:
                    chunk = await loop.sock_recv(second, 1 << 16)
                    assert chunk, "the new connection closed early"
                    stream += chunk
                    new = whole_frames(stream)
            await sink.aclose()
    assert 0 < len(old) < 40  # what the old connection's receive buffer held when the sink gave it up
    # In commit order, none twice: what the old connection had not sent was discarded, not sent after
    # the new connection's copies. (The receiver read nothing before the sink gave up, so no frame may repeat.)
    assert old + new == list(range(40))
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (40, 0)


async def test_tcp_syslog_reconnects_and_loses_nothing_when_the_receiver_resets_the_connection() -> None:
    connections: list[asyncio.StreamWriter] = []

    async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(receive, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = SyslogSink(SyslogSinkSettings(type="syslog", host="127.0.0.1", port=port, protocol="tcp", timeout_s=1))
    sink.start()
    try:
        sink.offer(records(make_entry(0)))
        await wait_until(lambda: sink.stats.records_sent >= 1, "the first record sent")
        for writer in connections:  # the receiver restarts: RST (SO_LINGER 0), then it listens again
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()
        await asyncio.sleep(0.2)
        for seq in range(1, 5):
            sink.offer(records(make_entry(seq)))
            await asyncio.sleep(0.3)
        await wait_until(lambda: sink.stats.records_sent == 5, "every record sent, the reset notwithstanding")
        assert len(connections) == 2 and sink.stats.records_dropped == 0
    finally:
        await sink.aclose()
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_jsonl_sink_shutdown_is_bounded_when_its_file_write_never_returns(tmp_path: Path) -> None:
    fifo = tmp_path / "stalled"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a log shipper that stopped reading
    try:
        sink = JsonLinesSink(JsonLinesSinkSettings(type="jsonl", path=str(fifo), drain_timeout_s=0.5))
        sink.start()
        sink.offer(records(*[make_entry(seq, pad=20_000) for seq in range(20)]))  # more than the pipe holds
        await asyncio.sleep(0.3)
        await asyncio.wait_for(sink.aclose(), 5)  # drain time, then the close's wait: never the write's
        assert sink.stats.records_dropped > 0
    finally:
        os.close(reader)  # the stuck write now fails and its thread goes back to waiting
