"""Sinks: copies of committed audit records streamed to a SIEM (JSON Lines, OTLP/HTTP logs, syslog).

Owns the ``audit.sinks`` settings (``SinkSettings``), the three sink kinds and ``SinkFanout``, which
the writer (audit/log.py) hands every committed batch. A sink is best-effort by design: each has a
bounded buffer and counts what it drops; a slow or dead sink never blocks or fails a call, because
the durable store stays the source of truth (an auditor re-reads gaps from it by origin and seq).
Records are already masked when committed; nothing here masks, signs or verifies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Any, Literal

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bastion.audit.entry import LogEntry

log = logging.getLogger(__name__)

SYSLOG_ENTERPRISE_ID = 32473
"""SD-ID suffix: 32473 is the private enterprise number reserved for documentation (RFC 5612)."""

_UNSAFE_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""Characters a line-oriented reader may treat as a break or that reorder text (log injection)."""


def escape_json_text(text: str) -> str:
    """Escape C0/C1 controls, DEL, U+2028/2029 and bidi controls as ``\\uXXXX``.

    Preconditions: ``text`` is serialised JSON. JSON has no bare control characters outside
    strings and ``\\uXXXX`` inside a string decodes to the same character, so the JSON value is
    unchanged while the text can no longer break or disguise a line.
    """
    return _UNSAFE_TEXT.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# -- settings --------------------------------------------------------------------------------------


class _SinkBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, min_length=1, max_length=64)
    """Label in logs and metrics; defaults to the sink type."""
    max_buffer_records: int = Field(default=10_000, ge=1)
    """Records held for this sink; beyond that new records are dropped and counted."""
    max_batch_records: int = Field(default=256, ge=1)
    drain_timeout_s: float = Field(default=5.0, ge=0)
    """At shutdown, how long the buffered records may take to go out before they are dropped."""


class JsonLinesSinkSettings(_SinkBase):
    """One JSON object per line, appended to ``path`` (or written to stdout when ``path`` is ``-``)."""

    type: Literal["jsonl"]
    path: str = Field(default="-", min_length=1)


class OtlpSinkSettings(_SinkBase):
    """OpenTelemetry logs over OTLP/HTTP with the JSON encoding: POST ``<endpoint>/v1/logs``."""

    type: Literal["otlp"]
    endpoint: str = Field(pattern=r"^https?://")
    headers: dict[str, SecretStr] = {}
    """Sent with every export, e.g. an ``authorization`` token."""
    service_name: str = "bastion"
    timeout_s: float = Field(default=10.0, gt=0)


class SyslogSinkSettings(_SinkBase):
    """RFC 5424 messages over UDP (RFC 5426, one per datagram) or TCP (RFC 6587 octet counting)."""

    type: Literal["syslog"]
    host: str = Field(min_length=1)
    port: int = Field(default=514, ge=1, le=65535)
    protocol: Literal["udp", "tcp"] = "udp"
    facility: int = Field(default=13, ge=0, le=23)
    """13 is "log audit" (RFC 5424 §6.2.1)."""
    app_name: str = Field(default="bastion", pattern=r"^[!-~]{1,48}$")
    max_message_bytes: int = Field(default=8192, ge=480, le=65_000)
    """A larger record is sent as a summary (origin, seq, kind, leaf hash) marked ``truncated``."""
    timeout_s: float = Field(default=5.0, gt=0)


SinkSettings = Annotated[
    JsonLinesSinkSettings | OtlpSinkSettings | SyslogSinkSettings, Field(discriminator="type")
]
"""One entry of ``audit.sinks``; ``type`` picks the kind."""


# -- sinks -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class SinkStats:
    """Counters for /metrics; they only grow."""

    records_sent: int = 0
    records_dropped: int = 0
    """Dropped because the buffer was full, delivery failed or shutdown cut the drain short."""
    delivery_failures: int = 0


class Sink:
    """A bounded buffer plus one delivery task; subclasses implement ``_deliver`` (and ``_close``)."""

    def __init__(self, name: str, *, max_buffer_records: int, max_batch_records: int, drain_timeout_s: float) -> None:
        self.name = name
        self.stats = SinkStats()
        self._queue: asyncio.Queue[LogEntry] = asyncio.Queue(max_buffer_records)
        self._max_batch = max_batch_records
        self._drain_timeout_s = drain_timeout_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the delivery task (call on the event loop that will offer records)."""
        if self._task is None:
            self._task = asyncio.create_task(self._serve(), name=f"audit-sink:{self.name}")

    def offer(self, entries: Sequence[LogEntry]) -> None:
        """Buffer ``entries`` without waiting; what does not fit is dropped and counted."""
        for index, entry in enumerate(entries):
            try:
                self._queue.put_nowait(entry)
            except asyncio.QueueFull:
                self._count_dropped(len(entries) - index, "buffer full")
                return

    async def aclose(self) -> None:
        """Deliver what is buffered (for at most ``drain_timeout_s``), then stop and release."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._drain_timeout_s):
                    await self._queue.join()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        left = self._queue.qsize()
        if left:
            self._count_dropped(left, "shutdown")
        await self._close()

    async def _serve(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._deliver(batch)
                self.stats.records_sent += len(batch)
            except asyncio.CancelledError:
                self._count_dropped(len(batch), "shutdown")
                raise
            except Exception as exc:
                self.stats.delivery_failures += 1
                self._count_dropped(len(batch), f"delivery failed: {type(exc).__name__}")
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _count_dropped(self, count: int, reason: str) -> None:
        self.stats.records_dropped += count
        log.warning("audit sink %s dropped %d records (%s)", self.name, count, reason)

    async def _deliver(self, batch: list[LogEntry]) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        return None


def _body(entry: LogEntry) -> Any:
    try:
        return orjson.loads(entry.body)
    except orjson.JSONDecodeError:
        return None


def render_json_line(entry: LogEntry) -> str:
    """One record as one line of JSON (no newline inside; control characters escaped)."""
    doc = {"origin": entry.origin, "seq": entry.seq, "time": entry.time, "kind": entry.kind,
           "leaf_hash": entry.leaf_hash.hex(), "record": _body(entry)}
    return escape_json_text(orjson.dumps(doc).decode()) + "\n"


class JsonLinesSink(Sink):
    """Appends one line per record to a file (opened on first write) or to stdout."""

    def __init__(self, settings: JsonLinesSinkSettings) -> None:
        super().__init__(settings.name or "jsonl", max_buffer_records=settings.max_buffer_records,
                         max_batch_records=settings.max_batch_records, drain_timeout_s=settings.drain_timeout_s)
        self._path = settings.path
        self._handle: IO[str] | None = None

    async def _deliver(self, batch: list[LogEntry]) -> None:
        text = "".join(render_json_line(entry) for entry in batch)
        await asyncio.to_thread(self._write, text)  # file writes block; keep them off the loop

    def _write(self, text: str) -> None:
        if self._handle is None:
            # kept open across batches and closed in _close
            self._handle = sys.stdout if self._path == "-" else Path(self._path).open("a", encoding="utf-8")
        self._handle.write(text)
        self._handle.flush()

    async def _close(self) -> None:
        if self._handle is not None and self._handle is not sys.stdout:
            await asyncio.to_thread(self._handle.close)
        self._handle = None


def _unix_nano(rfc3339: str) -> str:
    moment = datetime.fromisoformat(rfc3339)  # Python 3.11+ reads the trailing Z
    return str(int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000)


def _attr(key: str, value: str | int) -> dict[str, Any]:
    # proto3 JSON mapping: int64 travels as a decimal string.
    return {"key": key, "value": {"intValue": str(value)} if isinstance(value, int) else {"stringValue": value}}


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def render_otlp_record(entry: LogEntry) -> dict[str, Any]:
    """One record as an OTLP ``LogRecord`` (JSON encoding); the body is the record's canonical JSON."""
    body = _body(entry)
    doc = body if isinstance(body, dict) else {}
    outcome = doc.get("outcome")
    denied = outcome in ("denied", "error", "upstream_failed")
    attributes = [_attr("bastion.origin", entry.origin), _attr("bastion.seq", entry.seq),
                  _attr("bastion.kind", entry.kind), _attr("bastion.leaf_hash", entry.leaf_hash.hex())]
    if isinstance(outcome, str):
        attributes.append(_attr("bastion.outcome", outcome))
    record: dict[str, Any] = {
        "timeUnixNano": _unix_nano(entry.time),
        "severityNumber": 13 if denied else 9,  # WARN / INFO (OTel logs data model)
        "severityText": "WARN" if denied else "INFO",
        "body": {"stringValue": entry.body.decode("utf-8", errors="replace")},
        "attributes": attributes,
    }
    correlation = doc.get("correlation")
    traceparent = correlation.get("traceparent") if isinstance(correlation, dict) else None
    match = _TRACEPARENT.match(traceparent) if isinstance(traceparent, str) else None
    if match is not None:  # OTLP/JSON carries trace and span ids as hex, not base64
        record["traceId"], record["spanId"] = match.group(1), match.group(2)
    return record


def render_otlp_request(entries: Sequence[LogEntry], service_name: str) -> dict[str, Any]:
    """An ``ExportLogsServiceRequest`` (OTLP/HTTP JSON) holding ``entries``."""
    return {"resourceLogs": [{
        "resource": {"attributes": [_attr("service.name", service_name)]},
        "scopeLogs": [{"scope": {"name": "bastion.audit"}, "logRecords": [render_otlp_record(e) for e in entries]}],
    }]}


class OtlpSink(Sink):
    """POSTs batches to ``<endpoint>/v1/logs``; a non-2xx answer counts as a failed delivery."""

    def __init__(self, settings: OtlpSinkSettings, http_client: httpx.AsyncClient) -> None:
        super().__init__(settings.name or "otlp", max_buffer_records=settings.max_buffer_records,
                         max_batch_records=settings.max_batch_records, drain_timeout_s=settings.drain_timeout_s)
        self._url = settings.endpoint.rstrip("/") + "/v1/logs"
        self._headers = {k: v.get_secret_value() for k, v in settings.headers.items()} | {
            "content-type": "application/json"}
        self._service = settings.service_name
        self._timeout_s = settings.timeout_s
        self._client = http_client

    async def _deliver(self, batch: list[LogEntry]) -> None:
        content = orjson.dumps(render_otlp_request(batch, self._service))
        response = await self._client.post(self._url, content=content, headers=self._headers, timeout=self._timeout_s)
        response.raise_for_status()


def _printable(text: str, limit: int) -> str:
    """RFC 5424 header fields are PRINTUSASCII (33-126); anything else becomes ``_``."""
    cleaned = "".join(c if "!" <= c <= "~" else "_" for c in text)[:limit]
    return cleaned or "-"


def _sd_value(text: str) -> str:
    """Escape an SD-PARAM value (RFC 5424 §6.3.3) and its control characters."""
    return escape_json_text(text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]"))


def render_syslog_message(
    entry: LogEntry, *, facility: int, app_name: str, hostname: str, procid: str, max_message_bytes: int
) -> bytes:
    """One record as an RFC 5424 message: structured data names it, MSG is its JSON (one line, BOM-led UTF-8).

    A message over ``max_message_bytes`` carries a summary instead of the record, marked ``truncated``.
    """
    body = _body(entry)
    doc = body if isinstance(body, dict) else {}
    severity = 4 if doc.get("outcome") in ("denied", "error", "upstream_failed") else 6  # warning / informational
    sd = (f"[bastion@{SYSLOG_ENTERPRISE_ID} origin=\"{_sd_value(entry.origin)}\" seq=\"{entry.seq}\" "
          f"leaf_hash=\"{entry.leaf_hash.hex()}\"]")
    header = (f"<{facility * 8 + severity}>1 {entry.time} {_printable(hostname, 255)} {_printable(app_name, 48)} "
              f"{_printable(procid, 128)} {_printable(entry.kind, 32)} {sd} ").encode()
    msg = escape_json_text(entry.body.decode("utf-8", errors="replace"))
    message = header + b"\xef\xbb\xbf" + msg.encode("utf-8")
    if len(message) > max_message_bytes:
        summary = {"origin": entry.origin, "seq": entry.seq, "time": entry.time, "kind": entry.kind,
                   "outcome": doc.get("outcome"), "leaf_hash": entry.leaf_hash.hex(), "truncated": True}
        message = header + b"\xef\xbb\xbf" + escape_json_text(orjson.dumps(summary).decode()).encode("utf-8")
    return message


class _Datagrams(asyncio.DatagramProtocol):
    """Counts asynchronous send errors (e.g. ICMP port unreachable) instead of logging each one."""

    def __init__(self, stats: SinkStats) -> None:
        self._stats = stats

    def error_received(self, exc: Exception) -> None:
        self._stats.delivery_failures += 1


class SyslogSink(Sink):
    """Sends RFC 5424 messages; reconnects (TCP) on the next batch after a failure."""

    def __init__(self, settings: SyslogSinkSettings) -> None:
        super().__init__(settings.name or "syslog", max_buffer_records=settings.max_buffer_records,
                         max_batch_records=settings.max_batch_records, drain_timeout_s=settings.drain_timeout_s)
        self._settings = settings
        self._hostname = socket.gethostname()
        self._procid = str(os.getpid())
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.StreamWriter | None = None

    def _render(self, entry: LogEntry) -> bytes:
        s = self._settings
        return render_syslog_message(entry, facility=s.facility, app_name=s.app_name, hostname=self._hostname,
                                     procid=self._procid, max_message_bytes=s.max_message_bytes)

    async def _deliver(self, batch: list[LogEntry]) -> None:
        s = self._settings
        async with asyncio.timeout(s.timeout_s):
            if s.protocol == "udp":
                if self._udp is None:
                    self._udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                        lambda: _Datagrams(self.stats), remote_addr=(s.host, s.port))
                for entry in batch:
                    self._udp.sendto(self._render(entry))
                return
            try:
                if self._tcp is None:
                    _, self._tcp = await asyncio.open_connection(s.host, s.port)
                for entry in batch:
                    message = self._render(entry)
                    self._tcp.write(str(len(message)).encode() + b" " + message)  # RFC 6587 §3.4.1
                await self._tcp.drain()
            except BaseException:
                await self._close()
                raise

    async def _close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            writer, self._tcp = self._tcp, None
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()


# -- fan-out ---------------------------------------------------------------------------------------


class SinkFanout:
    """Every configured sink; the writer calls ``offer`` with each committed batch."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = tuple(sinks)

    def start(self) -> None:
        """Start each sink's delivery task."""
        for sink in self.sinks:
            sink.start()

    def offer(self, entries: Sequence[LogEntry]) -> None:
        """Hand committed records to every sink without waiting; never raises (the records are committed)."""
        for sink in self.sinks:
            try:
                sink.offer(entries)
            except Exception:
                log.exception("audit sink %s failed to buffer records", sink.name)

    async def aclose(self) -> None:
        """Drain and close every sink (each bounded by its own ``drain_timeout_s``)."""
        await asyncio.gather(*(sink.aclose() for sink in self.sinks))


def build_sinks(settings: Sequence[SinkSettings], http_client: httpx.AsyncClient) -> SinkFanout | None:
    """Build the sinks ``audit.sinks`` lists, or None when it lists none."""
    sinks: list[Sink] = []
    for item in settings:
        if isinstance(item, JsonLinesSinkSettings):
            sinks.append(JsonLinesSink(item))
        elif isinstance(item, OtlpSinkSettings):
            sinks.append(OtlpSink(item, http_client))
        else:
            sinks.append(SyslogSink(item))
    return SinkFanout(sinks) if sinks else None
