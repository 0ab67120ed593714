"""The sinks that send over the network: OTLP/HTTP logs and syslog (RFC 5424 over UDP or TCP).

Each says what "sent" means on its transport and which failures are worth a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import fcntl
import os
import socket
import struct
import sys
import termios
from datetime import UTC, datetime

import httpx
import orjson

from bastion.audit.sinks.delivery import DeliveryError, Sink, render_in_slices
from bastion.audit.sinks.format import (
    SinkRecord,
    render_otlp_record,
    render_otlp_request,
    render_syslog_message,
)
from bastion.audit.sinks.settings import OtlpSinkSettings, SyslogSinkSettings

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
            self._abort_tcp()
            if isinstance(exc, TimeoutError):
                raise DeliveryError(delivered, f"not acknowledged within {s.timeout_s:g} s", retryable=True) from exc
            raise DeliveryError(delivered, type(exc).__name__, retryable=True) from exc
        except BaseException:
            await self._close()
            raise

    def _abort_tcp(self) -> None:
        """Drop the connection together with what it has not sent, before its frames are sent again.

        A graceful close would leave the kernel delivering the queued bytes after the sink gave up on
        them, so a receiver that reads on later gets those records twice, and after newer ones from the
        new connection. SO_LINGER 0 makes the close reset the connection and discard its send queue; what
        the receiving host already took (acknowledged or not) stays readable there, ahead of the reset.
        """
        writer, self._tcp = self._tcp, None
        if writer is None:
            return
        with contextlib.suppress(OSError):  # already closed (fileno -1): nothing is left to discard
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # asyncio's own buffer goes too; the socket is closed on the next loop turn

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
