"""How one audit sink delivers: a bounded buffer, one worker task, retry pacing, counters and drop reports.

Owns ``Sink`` (the base of the three sink kinds in audit/sinks.py), ``SinkStats`` and the rule that a
sink never makes the writer wait: ``offer`` only buffers, and what does not fit is dropped and counted.
What a record looks like on the wire is audit/sink_format.py's; how it travels is each kind's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bastion.audit.sink_format import SinkRecord

log = logging.getLogger(__name__)

DROP_REPORT_INTERVAL_S = 60.0
"""After a sink's first drop is logged, later drops are logged as one summary at most this often."""
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 10.0
"""After a failed delivery the worker waits before the next attempt, doubling from the first to the
max wait while failures go on: a dead receiver then costs one attempt per wait, not one per batch,
and records arriving meanwhile wait in the buffer instead of being dropped batch by batch."""
RENDER_SLICE_BYTES = 64 * 1024
"""Record bytes rendered per trip to a worker thread (see ``render_in_slices``). Measured with four sinks
given 512 records of 50 KB at once: rendered on the loop, they stalled it for 0.5 s; in one thread trip
per batch, for up to 0.37 s; in 64 KiB slices, for at most ~10 ms, and delivery took no longer."""

T = TypeVar("T")


@dataclass(slots=True)
class SinkStats:
    """Counters for /metrics; they only grow. Every offered record ends in exactly one of the two record counts."""

    records_sent: int = 0
    """Records the receiver took, as far as the transport can tell (docs/audit-sinks.md, per transport)."""
    records_dropped: int = 0
    """Records never delivered: the buffer was full, the delivery failed, or shutdown cut the drain short."""
    delivery_failures: int = 0
    """Delivery attempts (one batch each) that failed in whole or in part."""


class DeliveryError(Exception):
    """Raised by a sink's ``_deliver`` when only ``delivered`` records of the batch reached the receiver."""

    def __init__(self, delivered: int, reason: str) -> None:
        super().__init__(reason)
        self.delivered = delivered
        self.reason = reason


class _DropReport:
    """Logs one sink's drops without flooding the log: the first at once, the rest summarised per interval."""

    def __init__(self, sink_name: str, interval_s: float) -> None:
        self._sink_name = sink_name
        self._interval_s = interval_s
        self._unreported: Counter[str] = Counter()
        self._reported_at = -math.inf
        self._timer: asyncio.TimerHandle | None = None

    def add(self, count: int, reason: str) -> None:
        self._unreported[reason] += count
        if self._timer is not None:
            return  # a summary is already due
        loop = asyncio.get_running_loop()
        wait_s = self._reported_at + self._interval_s - loop.time()
        if wait_s <= 0:
            self.flush()
        else:
            self._timer = loop.call_later(wait_s, self.flush)

    def flush(self) -> None:
        """Log the drops not yet reported, if any, and cancel the pending summary."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._unreported:
            return
        count = sum(self._unreported.values())
        reasons = "; ".join(f"{n} {reason}" for reason, n in self._unreported.most_common())
        first = self._reported_at == -math.inf
        log.warning("audit sink %s dropped %d records (%s)%s", self._sink_name, count, reasons,
                    f"; further drops are reported at most every {self._interval_s:g} s" if first else "",
                    extra={"sink": self._sink_name, "records_dropped": count})
        self._unreported.clear()
        self._reported_at = asyncio.get_running_loop().time()


class Sink(ABC):
    """A bounded buffer plus one delivery task; a subclass implements ``_deliver`` (and ``_close``).

    ``_deliver`` raises when the batch was not delivered (``DeliveryError`` when part of it was);
    the worker counts the outcome, so every record offered is counted once, as sent or as dropped.
    """

    def __init__(self, name: str, *, max_buffer_records: int, max_batch_records: int, drain_timeout_s: float,
                 drop_report_interval_s: float = DROP_REPORT_INTERVAL_S) -> None:
        self.name = name
        self.stats = SinkStats()
        self._queue: asyncio.Queue[SinkRecord] = asyncio.Queue(max_buffer_records)
        self._max_batch = max_batch_records
        self._drain_timeout_s = drain_timeout_s
        self._drops = _DropReport(name, drop_report_interval_s)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the delivery task (call on the event loop that will offer records)."""
        if self._task is None:
            self._task = asyncio.create_task(self._serve(), name=f"audit-sink:{self.name}")

    def offer(self, records: Sequence[SinkRecord]) -> None:
        """Buffer ``records`` without waiting; what does not fit is dropped and counted."""
        for index, record in enumerate(records):
            try:
                self._queue.put_nowait(record)
            except asyncio.QueueFull:
                self._count_dropped(len(records) - index, "buffer full")
                return

    async def aclose(self) -> None:
        """Deliver what is buffered (for at most ``drain_timeout_s``), then stop, release and report drops."""
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
            self._count_dropped(left, "cut at shutdown")
        self._drops.flush()
        await self._close()

    async def _serve(self) -> None:
        retry_s = RETRY_FIRST_S
        batch_limit = self._max_batch
        while True:
            batch = [await self._queue.get()]
            while len(batch) < batch_limit and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            delivered, reason = len(batch), ""
            try:
                await self._deliver(batch)
            except asyncio.CancelledError:
                self._count_dropped(len(batch), "cut at shutdown")
                raise
            except DeliveryError as exc:
                delivered, reason = exc.delivered, f"delivery failed: {exc.reason}"
            except Exception as exc:
                delivered, reason = 0, f"delivery failed: {type(exc).__name__}"
            finally:
                for _ in batch:
                    self._queue.task_done()
            self.stats.records_sent += delivered
            if not reason:
                retry_s, batch_limit = RETRY_FIRST_S, self._max_batch
                continue
            # The retry carries one record: rendering a full batch for a receiver that is still
            # down would be spent for nothing, while the buffer keeps the rest for its recovery.
            batch_limit = 1
            self.stats.delivery_failures += 1
            if delivered < len(batch):
                self._count_dropped(len(batch) - delivered, reason)
            await asyncio.sleep(retry_s)
            retry_s = min(retry_s * 2, RETRY_MAX_S)

    def _count_dropped(self, count: int, reason: str) -> None:
        self.stats.records_dropped += count
        self._drops.add(count, reason)

    @abstractmethod
    async def _deliver(self, batch: list[SinkRecord]) -> None:
        """Send ``batch`` in order; raise when not all of it reached the receiver."""

    async def _close(self) -> None:
        """Release what ``_deliver`` opened; a kind that holds nothing open keeps this default."""
        return None


async def render_in_slices(render: Callable[[SinkRecord], T], batch: Sequence[SinkRecord]) -> list[T]:
    """``render`` every record of ``batch``, in order, in worker threads, about ``RENDER_SLICE_BYTES`` per trip.

    Parsing, escaping and encoding cost CPU in proportion to record size. Off the loop they no longer
    run between the writer's steps, but they still hold the GIL: one long render would make the loop
    wait up to the interpreter's switch interval (5 ms) each time it needs the GIL back. Short slices
    hand it back after each one.
    """
    rendered: list[T] = []
    start, size = 0, 0
    for end, record in enumerate(batch, 1):
        size += len(record.entry.body)
        if size >= RENDER_SLICE_BYTES or end == len(batch):
            rendered += await asyncio.to_thread(lambda part: [render(r) for r in part], batch[start:end])
            start, size = end, 0
    return rendered
