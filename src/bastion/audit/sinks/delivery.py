"""How one audit sink delivers: a bounded buffer, one worker task, retries, counters and drop reports.

Owns ``Sink`` (the base of the three sink kinds in audit/sinks/), ``SinkStats``, ``DeliveryError`` and
the rule that a sink never makes the writer wait: ``offer`` only buffers, and what does not fit is
dropped and counted. A failure the receiver may recover from keeps the records for a retry; only a
full buffer, a refusal for good or shutdown drops them. What a record looks like on the wire is
audit/sinks/format.py's; how it travels, and which failures are worth a retry, is each kind's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

from bastion.audit.sinks.format import SinkRecord

log = logging.getLogger(__name__)

DROP_REPORT_INTERVAL_S = 60.0
"""After a sink's first drop (or retried failure) is logged, later ones are logged at most this often."""
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 10.0
"""After a failed delivery the worker waits before the next attempt, doubling from the first to the
max wait while failures go on: a dead receiver then costs one attempt per wait, not one per batch."""
RETRY_AFTER_MAX_S = 60.0
"""The longest wait a receiver may ask for (OTLP's Retry-After): a throttling hint is honoured, while a
wrong one cannot park the sink for hours; a longer outage shows as buffer-full drops anyway."""
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
    """Records never delivered: the buffer was full, the receiver refused them for good, or shutdown cut the
    drain short. A failure the receiver may recover from drops nothing: those records are retried."""
    delivery_failures: int = 0
    """Delivery attempts (one batch each) that failed in whole or in part, retried or not."""


class DeliveryError(Exception):
    """Raised by a sink's ``_deliver`` when only the first ``delivered`` records of the batch reached the receiver.

    ``retryable``: the rest may get through later (the receiver is down, busy or throttling), so they
    stay at the head of the buffer; otherwise the receiver refused them for good and they are dropped.
    ``retry_after_s``: how long the receiver asked the sender to wait, when it said.
    """

    def __init__(self, delivered: int, reason: str, *, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.delivered = delivered
        self.reason = reason
        self.retryable = retryable
        self.retry_after_s = retry_after_s


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

    A record stays in the buffer, and counts against its bound, until it is settled: sent, or dropped.
    The worker delivers from the head, in order. ``_deliver`` raises ``DeliveryError`` when not all of
    the batch got through, saying how much did and whether the rest is worth a retry; any other
    exception drops the batch, since a fault that is not the receiver's (a record that cannot be
    rendered, a bug) would fail every retry while the records behind it waited.
    """

    def __init__(self, name: str, *, max_buffer_records: int, max_batch_records: int, drain_timeout_s: float,
                 drop_report_interval_s: float = DROP_REPORT_INTERVAL_S) -> None:
        self.name = name
        self.stats = SinkStats()
        self._held: deque[SinkRecord] = deque()
        self._max_held = max_buffer_records
        self._arrived = asyncio.Event()
        self._settled = asyncio.Event()
        self._settled.set()
        self._max_batch = max_batch_records
        self._drain_timeout_s = drain_timeout_s
        self._drops = _DropReport(name, drop_report_interval_s)
        self._failure_report_interval_s = drop_report_interval_s
        self._failure_reported_at = -math.inf
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the delivery task (call on the event loop that will offer records)."""
        if self._task is None:
            self._task = asyncio.create_task(self._serve(), name=f"audit-sink:{self.name}")

    def offer(self, records: Sequence[SinkRecord]) -> None:
        """Buffer ``records`` without waiting; those that do not fit, the newest, are dropped and counted.

        The records already held are kept, whether waiting, in flight or back for a retry: what a
        receiver gets stays in commit order, with a gap where the buffer overflowed.
        """
        kept = records[:self._max_held - len(self._held)]
        if len(kept) < len(records):
            self._count_dropped(len(records) - len(kept), "buffer full")
        if kept:
            self._held.extend(kept)
            self._settled.clear()
            self._arrived.set()

    async def aclose(self) -> None:
        """Deliver what is held (for at most ``drain_timeout_s``), then stop, release and report drops."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._drain_timeout_s):
                    await self._settled.wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._held:  # waiting, in flight or held back for a retry
            self._drop_head(len(self._held), "cut at shutdown")
        self._drops.flush()
        await self._close()

    async def _serve(self) -> None:
        retry_s, probing = RETRY_FIRST_S, False
        while True:
            while not self._held:
                self._arrived.clear()
                await self._arrived.wait()
            # After a failure the next attempt carries one record: rendering a full batch for a
            # receiver that is still down would be spent for nothing.
            batch = list(islice(self._held, 1 if probing else self._max_batch))
            failure = await self._attempt(batch)
            delivered = len(batch) if failure is None else failure.delivered
            self._take(delivered)
            self.stats.records_sent += delivered
            if failure is not None:
                self.stats.delivery_failures += 1
            if failure is None or not failure.retryable:
                if failure is not None:  # refused for good: sending the rest again could only fail again
                    self._drop_head(len(batch) - delivered, f"delivery failed: {failure.reason}")
                # The batch is settled. The wait starts afresh only after a full batch, not after the
                # probe: over UDP a probe "succeeds" whenever the kernel takes it, even for a closed port.
                if not probing:
                    retry_s = RETRY_FIRST_S
                probing = False
                continue
            # The undelivered rest stays at the head and goes out again, in order, after the wait.
            self._report_failure(failure.reason)
            probing = True
            if failure.retry_after_s is None:
                await asyncio.sleep(retry_s)
            else:
                await asyncio.sleep(min(max(failure.retry_after_s, RETRY_FIRST_S), RETRY_AFTER_MAX_S))
            retry_s = min(retry_s * 2, RETRY_MAX_S)

    async def _attempt(self, batch: list[SinkRecord]) -> DeliveryError | None:
        """Deliver ``batch``: None when all of it went out, else how far it got and whether to retry the rest."""
        try:
            await self._deliver(batch)
        except DeliveryError as exc:
            exc.delivered = min(max(exc.delivered, 0), len(batch))
            return exc
        except Exception as exc:
            return DeliveryError(0, type(exc).__name__, retryable=False)
        return None

    def _take(self, count: int) -> None:
        """Take ``count`` settled records off the head of the buffer."""
        for _ in range(count):
            self._held.popleft()
        if not self._held:
            self._settled.set()

    def _drop_head(self, count: int, reason: str) -> None:
        self._take(count)
        if count:
            self._count_dropped(count, reason)

    def _count_dropped(self, count: int, reason: str) -> None:
        self.stats.records_dropped += count
        self._drops.add(count, reason)

    def _report_failure(self, reason: str) -> None:
        """Log a failure that is being retried, at most once per report interval (drops are reported apart)."""
        now = asyncio.get_running_loop().time()
        if now - self._failure_reported_at < self._failure_report_interval_s:
            return
        self._failure_reported_at = now
        log.warning("audit sink %s: delivery failed (%s); the records stay buffered and are retried", self.name,
                    reason, extra={"sink": self.name})

    @abstractmethod
    async def _deliver(self, batch: list[SinkRecord]) -> None:
        """Send ``batch`` in order; raise when not all of it reached the receiver (see the class docstring)."""

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
