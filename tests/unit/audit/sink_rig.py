"""Shared pieces of the audit sink tests: committed records to offer, sinks that deliver or fail on command,
bounded waits and a log handler that queues records (tests wait on it, never sleep)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from bastion.audit.sinks import delivery as sink_delivery
from bastion.audit.canonical import canonical_bytes
from bastion.audit.entry import LogEntry
from bastion.audit.hashing import hash_leaf
from bastion.audit.sinks.delivery import DeliveryError, Sink
from bastion.audit.sinks.format import SinkRecord

WAIT_S = 5.0
ORIGIN = "bastion.test/sinks"
HOSTILE = "line one\nline two\r\u2028<13>1 forged\x85\x7f\u202eevil\u2029\u2066\u200f\x1b[2J"
"""Every kind of character a log line may be split or disguised by."""
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


def records(*entries: LogEntry) -> list[SinkRecord]:
    return [SinkRecord(entry) for entry in entries]


class GatedSink(Sink):
    """Records what it delivers; each delivery waits for ``gate`` when one is set."""

    def __init__(self, max_buffer_records: int = 100, max_batch_records: int = 100, *,
                 drain_timeout_s: float = WAIT_S, drop_report_interval_s: float = 3600.0) -> None:
        super().__init__("gated", max_buffer_records=max_buffer_records, max_batch_records=max_batch_records,
                         drain_timeout_s=drain_timeout_s, drop_report_interval_s=drop_report_interval_s)
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.delivered: asyncio.Queue[LogEntry] = asyncio.Queue()

    async def _deliver(self, batch: list[SinkRecord]) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        for record in batch:
            self.delivered.put_nowait(record.entry)


class FlakySink(GatedSink):
    """A receiver that is down (a failure worth a retry) while ``down`` is set; records every batch it is given.

    ``deliver_first``: how many records of the next failing batch get through before it fails (once).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.down = True
        self.deliver_first = 0
        self.batches: list[list[int]] = []
        self.failures: asyncio.Queue[list[int]] = asyncio.Queue()
        """Each failed batch (its seqs), for tests to wait on."""

    async def _deliver(self, batch: list[SinkRecord]) -> None:
        seqs = [record.entry.seq for record in batch]
        self.batches.append(seqs)
        if not self.down:
            await super()._deliver(batch)
            return
        delivered, self.deliver_first = self.deliver_first, 0
        await super()._deliver(batch[:delivered])
        self.failures.put_nowait(seqs)
        raise DeliveryError(delivered, "receiver down", retryable=True)


async def take(queue: asyncio.Queue[Any], count: int) -> list[Any]:
    async with asyncio.timeout(WAIT_S):
        return [await queue.get() for _ in range(count)]


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` on the loop for at most WAIT_S (for state no event marks, like a sink's counters)."""
    try:
        async with asyncio.timeout(WAIT_S):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {WAIT_S:g} s: {what}") from None


class QueueHandler(logging.Handler):
    """Puts every record it handles on ``records`` (log calls happen on the event loop's thread)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: asyncio.Queue[logging.LogRecord] = asyncio.Queue()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.put_nowait(record)


@contextlib.contextmanager
def sink_log_records() -> Iterator[QueueHandler]:
    """Queue what audit/sinks/delivery.py logs (drop reports and retried failures) while the block runs."""
    handler = QueueHandler()
    logger = logging.getLogger(sink_delivery.__name__)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def drained(handler: QueueHandler) -> list[logging.LogRecord]:
    """The records ``handler`` holds now."""
    return [handler.records.get_nowait() for _ in range(handler.records.qsize())]


def parse_rfc5424(message: bytes) -> tuple[str, list[str], bytes]:
    """Split ``<PRI>1 TS HOST APP PROCID MSGID [SD] MSG`` into (pri, header fields, MSG)."""
    header, sep, msg = message.partition(b"] \xef\xbb\xbf")
    assert sep, message
    fields = header.decode("ascii").split(" ", 6)
    return fields[0], fields, msg
