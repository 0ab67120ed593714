"""Sink delivery: the bounded buffer, counters, retries after a failure and rate-limited drop reports.

A ``GatedSink`` stands in for a receiver; every wait is bounded and synchronised on events or queues.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from sink_rig import WAIT_S, GatedSink, QueueHandler, make_entry, records, take

from bastion.audit import sink_delivery
from bastion.audit.sink_format import SinkRecord
from bastion.audit.sinks import SinkFanout

pytestmark = pytest.mark.anyio


@pytest.fixture
def sink_log() -> Iterator[QueueHandler]:
    handler = QueueHandler()
    logger = logging.getLogger(sink_delivery.__name__)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def test_offer_drops_and_counts_when_the_buffer_is_full() -> None:
    sink = GatedSink(max_buffer_records=3, max_batch_records=1)
    sink.gate = asyncio.Event()
    sink.start()
    sink.offer(records(make_entry(0)))
    async with asyncio.timeout(WAIT_S):
        await sink.entered.wait()  # entry 0 is in flight, the buffer is empty again
    sink.offer(records(*(make_entry(i) for i in range(1, 6))))  # 3 fit, 2 are dropped; offer does not wait
    assert sink.stats.records_dropped == 2
    sink.gate.set()
    assert [e.seq for e in await take(sink.delivered, 4)] == [0, 1, 2, 3]
    await sink.aclose()
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (4, 2)


async def test_close_counts_the_rest_as_dropped_when_the_drain_times_out() -> None:
    sink = GatedSink(max_batch_records=1, drain_timeout_s=0.05)
    sink.gate = asyncio.Event()  # never set: the receiver hangs
    sink.start()
    sink.offer(records(*(make_entry(i) for i in range(3))))
    async with asyncio.timeout(WAIT_S):
        await sink.entered.wait()
        await sink.aclose()
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (0, 3)


async def test_fanout_offer_never_raises_when_a_sink_is_broken() -> None:
    class Broken(GatedSink):
        def offer(self, records: Any) -> None:
            raise RuntimeError("bug")

    healthy = GatedSink()
    fanout = SinkFanout([Broken(), healthy])
    fanout.start()
    fanout.offer([make_entry(0)])
    assert [e.seq for e in await take(healthy.delivered, 1)] == [0]
    await fanout.aclose()


async def test_the_retry_carries_one_record_when_a_delivery_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sink_delivery, "RETRY_FIRST_S", 0.0)

    class FailsOnce(GatedSink):
        def __init__(self) -> None:
            super().__init__(max_batch_records=10)
            self.batches: list[list[int]] = []
            self.failed = asyncio.Event()

        async def _deliver(self, batch: list[SinkRecord]) -> None:
            self.batches.append([record.entry.seq for record in batch])
            if not self.failed.is_set():
                self.failed.set()
                raise ConnectionError("receiver down")
            await super()._deliver(batch)

    sink = FailsOnce()
    sink.offer(records(*(make_entry(i) for i in range(6))))
    sink.start()
    async with asyncio.timeout(WAIT_S):
        await sink.failed.wait()
    sink.offer(records(*(make_entry(i) for i in range(6, 10))))
    await take(sink.delivered, 4)
    await sink.aclose()
    assert sink.batches == [[0, 1, 2, 3, 4, 5], [6], [7, 8, 9]]
    assert (sink.stats.records_sent, sink.stats.records_dropped, sink.stats.delivery_failures) == (4, 6, 1)


async def test_drops_are_logged_once_then_summarised_at_close_when_a_sink_keeps_dropping(
    sink_log: QueueHandler,
) -> None:
    sink = GatedSink(max_buffer_records=1, max_batch_records=1, drain_timeout_s=0.01)
    sink.gate = asyncio.Event()  # the receiver hangs: one record in flight, one buffered
    sink.start()
    sink.offer(records(make_entry(0)))
    async with asyncio.timeout(WAIT_S):
        await sink.entered.wait()
    for seq in range(1, 450):
        sink.offer(records(make_entry(seq)))
    assert sink.stats.records_dropped == 448
    assert sink_log.records.qsize() == 1  # not one line per drop
    first = sink_log.records.get_nowait()
    assert first.levelno == logging.WARNING and (vars(first)["sink"], vars(first)["records_dropped"]) == ("gated", 1)
    assert "1 buffer full" in first.getMessage() and "at most every 3600 s" in first.getMessage()
    await sink.aclose()
    (summary,) = await take(sink_log.records, 1)
    assert vars(summary)["records_dropped"] == 449  # 447 more that did not fit, 2 cut at shutdown
    assert "447 buffer full; 2 cut at shutdown" in summary.getMessage()
    assert sink.stats.records_dropped == 450 and sink_log.records.empty()


async def test_a_summary_follows_after_the_interval_when_drops_go_on(sink_log: QueueHandler) -> None:
    sink = GatedSink(max_buffer_records=1, max_batch_records=1, drain_timeout_s=0.01, drop_report_interval_s=0.05)
    sink.gate = asyncio.Event()
    sink.start()
    sink.offer(records(make_entry(0)))
    async with asyncio.timeout(WAIT_S):
        await sink.entered.wait()
    sink.offer(records(*(make_entry(seq) for seq in range(1, 4))))  # 1 fits, 2 dropped: reported at once
    sink.offer(records(*(make_entry(seq) for seq in range(4, 14))))  # 10 dropped: held for the summary
    first, summary = await take(sink_log.records, 2)
    assert (vars(first)["records_dropped"], vars(summary)["records_dropped"]) == (2, 10)
    assert summary.created - first.created >= 0.04  # not before the interval (loop clock vs wall clock)
    await sink.aclose()
