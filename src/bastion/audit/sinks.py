"""Sinks: copies of committed audit records streamed to a SIEM (JSON Lines, OTLP/HTTP logs, syslog).

Owns the ``audit.sinks`` settings (``SinkSettings``), the three sink kinds, what "sent" means for
each transport, and ``SinkFanout``, which the writer (audit/log.py) hands every committed batch.
A sink is best-effort by design: a slow or dead sink never blocks or fails a call, because the
durable store stays the source of truth (an auditor re-reads gaps from it by origin and seq).
Buffering and counting are audit/sink_delivery.py's, wire formats audit/sink_format.py's; records
are already masked when committed, and nothing here masks, signs or verifies. See docs/audit-sinks.md.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import email.utils
import errno
import fcntl
import functools
import io
import itertools
import logging
import os
import queue
import socket
import struct
import sys
import termios
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, TypeVar

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bastion.audit.entry import LogEntry
from bastion.audit.sink_delivery import DeliveryError, Sink, render_in_slices
from bastion.audit.sink_format import (
    SinkRecord,
    render_json_line,
    render_otlp_record,
    render_otlp_request,
    render_syslog_message,
)

log = logging.getLogger(__name__)

# -- settings --------------------------------------------------------------------------------------


class _SinkBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, min_length=1, max_length=64,
                             description="Label in logs and metrics (`sink=\"...\"`); defaults to the type.")
    max_buffer_records: int = Field(default=10_000, ge=1,
                                    description="Records held for this sink; beyond that new ones are dropped and counted.")
    max_batch_records: int = Field(default=256, ge=1, description="Most records sent in one delivery.")
    drain_timeout_s: float = Field(default=5.0, ge=0,
                                   description="At shutdown, how long buffered records may take to go out before "
                                   "they are dropped.")


class JsonLinesSinkSettings(_SinkBase):
    """One JSON object per line, appended to ``path`` (or written to stdout when ``path`` is ``-``)."""

    type: Literal["jsonl"]
    path: str = Field(default="-", min_length=1, description="File to append to (opened on first write); `-` is stdout.")


class OtlpSinkSettings(_SinkBase):
    """OpenTelemetry logs over OTLP/HTTP with the JSON encoding: POST ``<endpoint>/v1/logs``."""

    type: Literal["otlp"]
    endpoint: str = Field(pattern=r"^https?://", description="Collector base URL; records go to `<endpoint>/v1/logs`.")
    headers: dict[str, SecretStr] = Field(default={}, description="Sent with every export, e.g. an `authorization` token.")
    service_name: str = Field(default="bastion", description="The `service.name` resource attribute.")
    timeout_s: float = Field(default=10.0, gt=0, description="Time allowed for one export, connecting included.")


class SyslogSinkSettings(_SinkBase):
    """RFC 5424 messages over UDP (RFC 5426, one per datagram) or TCP (RFC 6587 octet counting)."""

    type: Literal["syslog"]
    host: str = Field(min_length=1, description="Syslog receiver host name or address.")
    port: int = Field(default=514, ge=1, le=65535, description="Syslog receiver port.")
    protocol: Literal["udp", "tcp"] = Field(default="udp", description="`udp`: one message per datagram (RFC 5426); "
                                            "`tcp`: octet-counted frames (RFC 6587).")
    facility: int = Field(default=13, ge=0, le=23, description="13 is \"log audit\" (RFC 5424 §6.2.1).")
    app_name: str = Field(default="bastion", pattern=r"^[!-~]{1,48}$", description="The APP-NAME header field.")
    max_message_bytes: int = Field(default=8192, ge=480, le=65_000,
                                   description="A larger record is sent as a summary (origin, seq, kind, outcome, "
                                   "leaf hash) marked `truncated`.")
    timeout_s: float = Field(default=5.0, gt=0,
                             description="Time allowed to resolve `host` and, over TCP, to connect and have a batch "
                             "acknowledged by the receiver's TCP stack.")


SinkSettings = Annotated[
    JsonLinesSinkSettings | OtlpSinkSettings | SyslogSinkSettings, Field(discriminator="type")
]
"""One entry of ``audit.sinks``; ``type`` picks the kind."""


# -- sinks -----------------------------------------------------------------------------------------


T = TypeVar("T")


class WriterThread:
    """Runs one sink's blocking writes in order on a daemon thread of its own.

    Not the event loop's executor: its threads are joined when the loop closes, so a write that
    never returns would hang the gateway's exit; a daemon thread is left to the process exit.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[[], Any]]] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    @property
    def started(self) -> bool:
        """Whether a job was ever queued (the thread starts with the first)."""
        return self._thread.ident is not None

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args)``; the future settles with its result or exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, functools.partial(fn, *args)))
        if self._thread.ident is None:  # the first job starts it
            self._thread.start()
        return future

    def _serve(self) -> None:
        while True:
            loop, future, job = self._jobs.get()
            try:
                result, failure = job(), None
            except BaseException as exc:  # handed to the awaiting task, which decides
                result, failure = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
                loop.call_soon_threadsafe(_settle, future, result, failure)


def _settle(future: asyncio.Future[Any], result: Any, failure: BaseException | None) -> None:
    if future.done():
        return
    if failure is None:
        future.set_result(result)
    else:
        future.set_exception(failure)


class _RawStream(Protocol):
    def write(self, data: bytes | memoryview, /) -> int | None: ...


def _write_some(stream: _RawStream, data: bytes | memoryview) -> int:
    """One unbuffered write; how many bytes it took, which may be fewer than given."""
    count = stream.write(data)
    if not count:  # None: a non-blocking stream is full (and 0 would have the caller spin)
        raise BlockingIOError(errno.EAGAIN, "the stream takes no bytes now")
    return count


def _os_error_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


class JsonLinesSink(Sink):
    """Appends one line per record to a file (opened on first write) or to stdout.

    Sent: the record's line was written to the operating system (not fsynced). A write the system
    refuses (a full disk, a pipe whose reader is gone) is retried. Writes are unbuffered, so a failed
    one leaves nothing behind to come out later, and the line it cut short is finished, not written
    again, when its record comes back: no line appears twice, and none is torn between whole ones.
    """

    def __init__(self, settings: JsonLinesSinkSettings) -> None:
        super().__init__(settings.name or "jsonl", max_buffer_records=settings.max_buffer_records,
                         max_batch_records=settings.max_batch_records, drain_timeout_s=settings.drain_timeout_s)
        self._path = None if settings.path == "-" else Path(settings.path)
        self._file: io.FileIO | None = None
        self._torn: tuple[SinkRecord, int] | None = None
        """The record whose line a failed write cut short, and how many of the line's bytes are out."""
        self._writer = WriterThread(f"audit-sink-{self.name}")

    async def _deliver(self, batch: list[SinkRecord]) -> None:
        # Encoded in the render slices too: in one go, megabytes of text would hold the GIL at length.
        lines = await render_in_slices(lambda record: render_json_line(record).encode(), batch)
        await self._writer.run(self._write, batch, lines)  # file writes block; keep them off the loop

    def _write(self, batch: list[SinkRecord], lines: list[bytes]) -> None:
        torn = self._torn
        skip = torn[1] if torn is not None and torn[0] is batch[0] else 0  # finish the torn line first
        ends = list(itertools.accumulate(len(line) for line in lines))
        data = memoryview(b"".join(lines))  # one write per batch, not per line
        out = skip
        try:
            stream = self._stream()
            if torn is not None and not skip:
                _write_some(stream, b"\n")  # its record was given up: end the fragment, keep later lines whole
            self._torn = None
            while out < len(data):
                out += _write_some(stream, data[out:])
        except OSError as exc:
            written = bisect.bisect_right(ends, out)  # whole lines out
            if written < len(lines) and out > (ends[written - 1] if written else 0):
                self._torn = (batch[written], out - (ends[written - 1] if written else 0))
            raise DeliveryError(written, _os_error_name(exc), retryable=True) from exc

    def _stream(self) -> _RawStream:
        if self._path is None:
            sys.stdout.flush()  # text printed before goes first, whole
            # Below the buffered layer: a failed write must not leave bytes in a buffer that would
            # come out after the retry had written them again.
            stream: _RawStream = getattr(sys.stdout.buffer, "raw", sys.stdout.buffer)
            return stream
        if self._file is None:
            # Kept open across batches, failed ones too, so the rest of a torn line follows it in the
            # same file; closed in _close.
            self._file = self._path.open("ab", buffering=0)
        return self._file

    async def _close(self) -> None:
        if self._writer.started:
            # Behind a write that never returns (a stalled FIFO, a hung mount) this waits too:
            # shutdown gives it the drain time once more, then leaves the thread to the process exit.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._writer.run(self._finish), self._drain_timeout_s)

    def _finish(self) -> None:
        """End a line left torn (its record was cut at shutdown), so that what follows starts whole; close the file."""
        if self._torn is not None:
            self._torn = None
            with contextlib.suppress(OSError):  # then it stays unterminated; its record counts as dropped either way
                _write_some(self._stream(), b"\n")
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()


_RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
"""The answers the OTLP/HTTP specification says to retry ("Retryable Response Codes"); it forbids retrying
other 4xx and 5xx answers."""


class OtlpSink(Sink):
    """POSTs batches to ``<endpoint>/v1/logs``.

    Sent: the collector answered 2xx, less the records its ``partialSuccess`` reports rejected. What the
    OTLP/HTTP specification says to retry is retried (``_RETRYABLE_STATUS``, no answer at all); any other
    refusal drops the batch.
    """

    def __init__(self, settings: OtlpSinkSettings, http_client: httpx.AsyncClient) -> None:
        super().__init__(settings.name or "otlp", max_buffer_records=settings.max_buffer_records,
                         max_batch_records=settings.max_batch_records, drain_timeout_s=settings.drain_timeout_s)
        self._url = settings.endpoint.rstrip("/") + "/v1/logs"
        self._headers = {k: v.get_secret_value() for k, v in settings.headers.items()} | {
            "content-type": "application/json"}
        self._service = settings.service_name
        self._timeout_s = settings.timeout_s
        self._client = http_client

    async def _deliver(self, batch: list[SinkRecord]) -> None:
        log_records = await render_in_slices(render_otlp_record, batch)
        content = await asyncio.to_thread(render_otlp_request, log_records, self._service)  # megabytes to copy
        try:
            response = await self._client.post(self._url, content=content, headers=self._headers,
                                               timeout=self._timeout_s)
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            # Not reached, or no answer: the specification asks for the same request again, after a wait.
            raise DeliveryError(0, type(exc).__name__, retryable=True) from exc
        if response.status_code in _RETRYABLE_STATUS:
            raise DeliveryError(0, f"HTTP {response.status_code}", retryable=True,
                                retry_after_s=_retry_after_s(response.headers.get("retry-after")))
        if not response.is_success:
            raise DeliveryError(0, f"HTTP {response.status_code}", retryable=False)
        rejected = min(_rejected_log_records(response.content), len(batch))
        if rejected > 0:
            raise DeliveryError(len(batch) - rejected, "collector rejected records (partialSuccess)", retryable=False)


def _retry_after_s(value: str | None) -> float | None:
    """The wait a ``Retry-After`` header asks for, delay-seconds or an HTTP-date (RFC 9110 §10.2.3); None if unreadable.

    May be negative (a date already past); the sink bounds what it waits.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except ValueError:
        return None
    if moment.tzinfo is None:  # "-0000" reads as naive; an HTTP-date is always in UTC
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime.now(UTC)).total_seconds()


def _rejected_log_records(answer: bytes) -> int:
    """``partialSuccess.rejectedLogRecords`` of an ``ExportLogsServiceResponse`` (int64: a string or a number)."""
    try:
        doc = orjson.loads(answer)
        return int(doc["partialSuccess"]["rejectedLogRecords"])
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
        return 0  # no body, no partialSuccess or none rejected: a 2xx answer accepts the whole batch


def _unacknowledged_bytes(writer: asyncio.StreamWriter) -> int:
    """Bytes written to this TCP socket that the peer's TCP has not acknowledged (Linux SIOCOUTQ)."""
    if sys.platform != "linux":
        return 0  # SIOCOUTQ is Linux's; elsewhere a frame counts as sent once the kernel has taken it
    sock = writer.get_extra_info("socket")
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0])


def _frames_acknowledged(writer: asyncio.StreamWriter, frames: list[bytes], written: int) -> int:
    """How many whole frames, from the first, the peer acknowledged of the ``written`` bytes just sent."""
    try:
        pending = writer.transport.get_write_buffer_size() + _unacknowledged_bytes(writer)
    except (OSError, ValueError):  # ValueError: asyncio already closed the socket (fileno -1)
        return 0  # the connection is gone: nothing more can be confirmed
    acknowledged, count = written - pending, 0
    for frame in frames:
        acknowledged -= len(frame)
        if acknowledged < 0:
            break
        count += 1
    return count


class SyslogSink(Sink):
    """Sends RFC 5424 messages; reconnects (TCP) on the next batch after a failure.

    Sent, UDP: the kernel accepted the datagram (UDP has no acknowledgement). Sent, TCP: the receiver's
    TCP stack acknowledged the frame (it is in the receiving host's socket buffer; whether the syslog
    daemon reads it cannot be known, RFC 6587 has no application acknowledgement).
    """

    def __init__(self, settings: SyslogSinkSettings) -> None:
        super().__init__(settings.name or "syslog", max_buffer_records=settings.max_buffer_records,
                         max_batch_records=settings.max_batch_records, drain_timeout_s=settings.drain_timeout_s)
        self._settings = settings
        self._hostname = socket.gethostname()
        self._procid = str(os.getpid())
        self._udp: socket.socket | None = None
        self._tcp: asyncio.StreamWriter | None = None

    def _render(self, record: SinkRecord) -> bytes:
        s = self._settings
        return render_syslog_message(record, facility=s.facility, app_name=s.app_name, hostname=self._hostname,
                                     procid=self._procid, max_message_bytes=s.max_message_bytes)

    async def _deliver(self, batch: list[SinkRecord]) -> None:
        messages = await render_in_slices(self._render, batch)
        if self._settings.protocol == "udp":
            await self._send_datagrams(messages)
        else:
            await self._send_frames(messages)

    async def _send_datagrams(self, messages: list[bytes]) -> None:
        try:
            udp = self._udp if self._udp is not None else await self._open_udp()
        except OSError as exc:  # the name did not resolve, or not in time (TimeoutError is an OSError)
            raise DeliveryError(0, type(exc).__name__, retryable=True) from exc
        for sent, message in enumerate(messages):
            try:
                udp.send(message)
            except OSError as exc:
                # ECONNREFUSED reports an ICMP refusal of an earlier datagram (gone, yet counted as sent),
                # and this one is not sent; EAGAIN/ENOBUFS: the socket buffer is full. Either way this
                # record and those after it wait for the retry.
                raise DeliveryError(sent, f"datagram refused: {type(exc).__name__}", retryable=True) from exc

    async def _open_udp(self) -> socket.socket:
        s = self._settings
        async with asyncio.timeout(s.timeout_s):
            family, kind, proto, _, address = (await asyncio.get_running_loop().getaddrinfo(
                s.host, s.port, type=socket.SOCK_DGRAM))[0]
        udp = socket.socket(family, kind, proto)
        udp.setblocking(False)
        try:
            udp.connect(address)  # sends nothing; lets the kernel report ICMP refusals on later sends
        except OSError:
            udp.close()
            raise
        self._udp = udp
        return udp

    async def _send_frames(self, messages: list[bytes]) -> None:
        frames = [str(len(message)).encode() + b" " + message for message in messages]  # RFC 6587 §3.4.1
        data = b"".join(frames)
        s = self._settings
        try:
            async with asyncio.timeout(s.timeout_s):
                if self._tcp is None:
                    _, self._tcp = await asyncio.open_connection(s.host, s.port)
                self._tcp.write(data)
                await self._tcp.drain()
                # Wait for the peer's acknowledgement too, so that at most one batch is ever
                # unconfirmed and a receiver that stops reading shows up as drops, not as "sent".
                pause_s = 0.0005
                while self._tcp.transport.get_write_buffer_size() or _unacknowledged_bytes(self._tcp) > 0:
                    await asyncio.sleep(pause_s)
                    pause_s = min(pause_s * 2, 0.05)
        except Exception as exc:
            # The frames not known to be acknowledged go again on a new connection: at least once, since
            # some may have arrived (a connection that is gone confirms nothing), and a frame may be cut
            # short, so the stream cannot be resumed.
            delivered = _frames_acknowledged(self._tcp, frames, len(data)) if self._tcp is not None else 0
            await self._close()
            if isinstance(exc, TimeoutError):
                raise DeliveryError(delivered, f"not acknowledged within {s.timeout_s:g} s", retryable=True) from exc
            raise DeliveryError(delivered, type(exc).__name__, retryable=True) from exc
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
        """Hand committed records to every sink without waiting; never raises (the records are committed).

        Each record is wrapped once and shared, so it is parsed once however many sinks copy it.
        """
        records = [SinkRecord(entry) for entry in entries]
        for sink in self.sinks:
            try:
                sink.offer(records)
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
