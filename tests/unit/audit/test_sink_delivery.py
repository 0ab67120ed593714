"""Sink delivery: the bounded buffer, counters, retries after a failure and rate-limited drop reports.

A ``GatedSink`` or a ``FlakySink`` stands in for a receiver; every wait is bounded and synchronised on
events or queues.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from sink_rig import (
    WAIT_S,
    FlakySink,
    GatedSink,
    QueueHandler,
    drained,
    make_entry,
    records,
    sink_log_records,
    take,
)

from bastion.audit.sinks.delivery import DeliveryError
from bastion.audit.sinks.format import SinkRecord
from bastion.audit.sinks import SinkFanout

pytestmark = pytest.mark.anyio


@pytest.fixture
def sink_log() -> Iterator[QueueHandler]:
    with sink_log_records() as handler:
        yield handler


async def test_offer_drops_and_counts_when_the_buffer_is_full() -> None:
    sink = GatedSink(max_buffer_records=3, max_batch_records=1)
    sink.gate = asyncio.Event()
    sink.start()
    sink.offer(records(make_entry(0)))
    async with asyncio.timeout(WAIT_S):
        await sink.entered.wait()  # entry 0 is in flight: until it is settled it takes one of the 3 places
    sink.offer(records(*(make_entry(i) for i in range(1, 6))))  # 2 fit, 3 are dropped; offer does not wait
    assert sink.stats.records_dropped == 3
    sink.gate.set()
    assert [e.seq for e in await take(sink.delivered, 3)] == [0, 1, 2]
    await sink.aclose()
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (3, 3)


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


async def test_nothing_is_dropped_and_order_is_kept_when_a_failed_delivery_is_retried() -> None:
    sink = FlakySink(max_batch_records=10)
    sink.offer(records(*(make_entry(i) for i in range(6))))
    sink.start()
    await take(sink.failures, 1)
    sink.offer(records(*(make_entry(i) for i in range(6, 10))))  # they queue behind the held-back batch
    sink.down = False
    assert [e.seq for e in await take(sink.delivered, 10)] == list(range(10))
    await sink.aclose()
    # The retry probes with one record, the first; once it is through, full batches resume. A slow
    # machine may fit more failed probes in before the receiver is up: each carries the same record.
    assert sink.batches[0] == [0, 1, 2, 3, 4, 5] and sink.batches[-2:] == [[0], [1, 2, 3, 4, 5, 6, 7, 8, 9]]
    assert all(batch == [0] for batch in sink.batches[1:-2])
    failures = len(sink.batches) - 2
    assert (sink.stats.records_sent, sink.stats.records_dropped, sink.stats.delivery_failures) == (10, 0, failures)


async def test_a_retry_starts_at_the_first_undelivered_record_when_part_of_a_batch_went_out() -> None:
    sink = FlakySink(max_batch_records=10)
    sink.deliver_first = 2
    sink.offer(records(*(make_entry(i) for i in range(5))))
    sink.start()
    await take(sink.failures, 1)
    sink.down = False
    assert [e.seq for e in await take(sink.delivered, 5)] == [0, 1, 2, 3, 4]  # none twice
    await sink.aclose()
    assert sink.batches[0] == [0, 1, 2, 3, 4] and sink.batches[-2:] == [[2], [3, 4]]
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (5, 0)


async def test_only_the_overflow_is_dropped_when_the_receiver_is_down_longer_than_the_buffer_lasts(
    sink_log: QueueHandler,
) -> None:
    sink = FlakySink(max_buffer_records=5, max_batch_records=5)
    sink.offer(records(*(make_entry(i) for i in range(3))))
    sink.start()
    await take(sink.failures, 1)
    sink.offer(records(*(make_entry(i) for i in range(3, 8))))  # 3 and 4 fit behind the held-back three
    sink.offer(records(make_entry(8)))
    assert sink.stats.records_dropped == 4
    sink.down = False
    assert [e.seq for e in await take(sink.delivered, 5)] == [0, 1, 2, 3, 4]
    await sink.aclose()
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (5, 4)
    first, summary = (r.getMessage() for r in drained(sink_log) if "records_dropped" in vars(r))
    assert "(3 buffer full)" in first and "(1 buffer full)" in summary


async def test_what_is_held_counts_as_cut_at_shutdown_when_the_receiver_stays_down(sink_log: QueueHandler) -> None:
    sink = FlakySink(max_batch_records=2, drain_timeout_s=0.3)
    sink.offer(records(*(make_entry(i) for i in range(4))))
    sink.start()
    await take(sink.failures, 1)
    await sink.aclose()
    assert (sink.stats.records_sent, sink.stats.records_dropped) == (0, 4)
    assert sink.stats.delivery_failures >= 1
    retried, dropped = drained(sink_log)  # one line for the failures (rate-limited), one for the drops
    assert "delivery failed (receiver down); the records stay buffered and are retried" in retried.getMessage()
    assert "dropped 4 records (4 cut at shutdown)" in dropped.getMessage()


@pytest.mark.parametrize(("failure", "sent", "reason"), [
    (DeliveryError(1, "refused", retryable=False), 1, "(2 delivery failed: refused)"),
    (RuntimeError("a bug"), 0, "(3 delivery failed: RuntimeError)"),  # not the receiver's: a retry would fail again
])
async def test_a_batch_is_dropped_and_the_next_goes_out_whole_when_a_failure_is_not_retryable(
    failure: Exception, sent: int, reason: str, sink_log: QueueHandler,
) -> None:
    class FailsOnce(GatedSink):
        def __init__(self) -> None:
            super().__init__(max_batch_records=10)
            self.batches: list[list[int]] = []

        async def _deliver(self, batch: list[SinkRecord]) -> None:
            self.batches.append([record.entry.seq for record in batch])
            if len(self.batches) == 1:
                await super()._deliver(batch[:sent])
                raise failure
            await super()._deliver(batch)

    sink = FailsOnce()
    sink.offer(records(*(make_entry(i) for i in range(3))))
    sink.start()
    (drop,) = await take(sink_log.records, 1)  # the batch's drop, reported at once
    sink.offer(records(*(make_entry(i) for i in range(3, 6))))
    await take(sink.delivered, sent + 3)
    await sink.aclose()
    assert sink.batches == [[0, 1, 2], [3, 4, 5]]  # no one-record probe: nothing was held back
    assert reason in drop.getMessage()
    stats = sink.stats
    assert (stats.records_sent, stats.records_dropped, stats.delivery_failures) == (sent + 3, 3 - sent, 1)


async def test_the_wait_keeps_doubling_when_only_one_record_probes_get_through() -> None:
    """Over UDP a probe gets through whenever the kernel takes it, even for a port nobody listens on."""

    class ProbesPass(GatedSink):
        def __init__(self) -> None:
            super().__init__(max_batch_records=10)
            self.attempts: list[tuple[float, list[int]]] = []

        async def _deliver(self, batch: list[SinkRecord]) -> None:
            self.attempts.append((asyncio.get_running_loop().time(), [record.entry.seq for record in batch]))
            if len(batch) > 1:
                raise DeliveryError(0, "refused", retryable=True)
            await super()._deliver(batch)

    sink = ProbesPass()
    sink.offer(records(*(make_entry(i) for i in range(4))))
    sink.start()
    await take(sink.delivered, 4)
    await sink.aclose()
    times, batches = zip(*sink.attempts, strict=True)
    assert list(batches) == [[0, 1, 2, 3], [0], [1, 2, 3], [1], [2, 3], [2], [3]]
    waits = [times[i + 1] - times[i] for i in (0, 2, 4)]  # from each failure to the probe after it
    assert waits[0] >= 0.09 and waits[1] >= 0.19 and waits[2] >= 0.39  # 0.1, 0.2, 0.4 s: not reset by a probe
    assert (sink.stats.records_sent, sink.stats.records_dropped, sink.stats.delivery_failures) == (4, 0, 3)


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
    assert sink.stats.records_dropped == 449  # the one place is held by the record in flight
    assert sink_log.records.qsize() == 1  # not one line per drop
    first = sink_log.records.get_nowait()
    assert first.levelno == logging.WARNING and (vars(first)["sink"], vars(first)["records_dropped"]) == ("gated", 1)
    assert "1 buffer full" in first.getMessage() and "at most every 3600 s" in first.getMessage()
    await sink.aclose()
    (summary,) = await take(sink_log.records, 1)
    assert vars(summary)["records_dropped"] == 449  # 448 more that did not fit, 1 cut at shutdown
    assert "448 buffer full; 1 cut at shutdown" in summary.getMessage()
    assert sink.stats.records_dropped == 450 and sink_log.records.empty()


async def test_a_summary_follows_after_the_interval_when_drops_go_on(sink_log: QueueHandler) -> None:
    sink = GatedSink(max_buffer_records=1, max_batch_records=1, drain_timeout_s=0.01, drop_report_interval_s=0.05)
    sink.gate = asyncio.Event()
    sink.start()
    sink.offer(records(make_entry(0)))
    async with asyncio.timeout(WAIT_S):
        await sink.entered.wait()
    sink.offer(records(*(make_entry(seq) for seq in range(1, 4))))  # the in-flight record fills it: 3 dropped at once
    sink.offer(records(*(make_entry(seq) for seq in range(4, 14))))  # 10 dropped: held for the summary
    first, summary = await take(sink_log.records, 2)
    assert (vars(first)["records_dropped"], vars(summary)["records_dropped"]) == (3, 10)
    assert summary.created - first.created >= 0.04  # not before the interval (loop clock vs wall clock)
    await sink.aclose()
