"""Read-only access to a stored audit log for auditors and operators: verify, show, follow.

Owns paging checkpoints and records out of an ``AuditStore``, feeding them to the offline
verifier without loading a log into memory, reading the frontier a retention checkpoint carries,
finding one interaction's records, following a log, and reading a time bound a reader gives into
the stored time format. It never writes; inclusion proofs are audit/proving.py's and the export
format is audit/export.py's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from datetime import UTC, timedelta
from typing import Any, TypeVar

from bastion.audit.checkpoint import parse_checkpoint, parse_retention, parse_signed_note
from bastion.audit.compact import Frontier
from bastion.audit.entry import LogEntry, StoredCheckpoint, StoredTimestamp
from bastion.audit.keys import KeyRing
from bastion.audit.record import parse_rfc3339, render_time
from bastion.errors import StorageError, VerificationError
from bastion.storage.base import AuditStore, CheckpointTimestampStore, Store, VerifiedRow
from bastion.verifier import Options, Report, TimestampTrust, verify_log

PAGE_RECORDS = 1000
CHECKPOINT_PAGE = 1000
DEFAULT_OPTIONS = Options()
MAX_SEQ = 2**53 - 1
"""The largest seq a record can carry: its body holds it as a JSON integer (RFC 8785 allows no larger)."""
FOLLOW_RETRY_MAX_S = 30.0
"""The longest pause between retries while following a store that cannot be read."""
RetryNotice = Callable[[StorageError, float], None]
"""Told the error and the pause in seconds before each retry of a follow."""


def parse_time_bound(text: str, *, naive_is_utc: bool = False) -> str:
    """Return an RFC 3339 date-time as a bound on stored record times, in their format
    (``render_time``: UTC, milliseconds, ``Z``), where string order is time order.

    An offset is converted to UTC. A fraction finer than a millisecond is rounded up: stored times
    are whole milliseconds, so ``time >= bound`` and ``time < bound`` keep their meaning. A time
    without an offset is refused or, with ``naive_is_utc`` (a form's ``datetime-local``), taken as UTC.

    Raises:
        ValueError: not a date-time, no offset, or outside the years 1..9999 once in UTC.
    """
    moment = parse_rfc3339(text, naive_is_utc=naive_is_utc)
    try:
        moment = moment.astimezone(UTC)
        if sub_ms := moment.microsecond % 1000:
            moment += timedelta(microseconds=1000 - sub_ms)
    except OverflowError as exc:
        raise ValueError(f"{text!r} is out of range") from exc
    return render_time(moment)


SizedRow = TypeVar("SizedRow", StoredCheckpoint, StoredTimestamp)


async def _fetch_all_by_size(fetch_page: Callable[[int, int], Awaitable[list[SizedRow]]], start: int) -> list[SizedRow]:
    """Page through rows ordered by tree size where one size may hold several rows.

    A page that ends mid-size is re-read from that size (and grown when one size fills a whole page).
    """
    found: list[SizedRow] = []
    limit = CHECKPOINT_PAGE
    while True:
        page = await fetch_page(start, limit)
        if len(page) < limit:
            return found + page
        last = page[-1].tree_size
        if page[0].tree_size == last:
            limit *= 2
            continue
        found += [row for row in page if row.tree_size < last]
        start, limit = last, CHECKPOINT_PAGE


async def fetch_all_checkpoints(store: AuditStore, origin: str, min_tree_size: int = 0) -> list[StoredCheckpoint]:
    """Return every checkpoint of ``origin`` with ``tree_size >= min_tree_size``, oldest first.

    Heartbeats repeat a size, so pages are cut by size.

    Raises:
        StorageError: the store cannot be read.
    """
    return await _fetch_all_by_size(lambda start, limit: store.fetch_checkpoints(origin, start, limit), min_tree_size)


async def fetch_all_timestamps(
    tokens: CheckpointTimestampStore, origin: str, min_tree_size: int = 0
) -> list[StoredTimestamp]:
    """Return every stored RFC 3161 token of ``origin`` with ``tree_size >= min_tree_size``, by size then TSA.

    Raises:
        StorageError: the store cannot be read.
    """
    return await _fetch_all_by_size(lambda start, limit: tokens.fetch_timestamps(origin, start, limit), min_tree_size)


async def _pages(store: AuditStore, origins: list[str]) -> AsyncGenerator[list[VerifiedRow], None]:
    for origin in origins:
        async for page in store.stream_indexed_entries(origin, PAGE_RECORDS):
            yield page


def _blocking_entries(
    pages: AsyncGenerator[list[VerifiedRow], None], loop: asyncio.AbstractEventLoop
) -> Iterator[VerifiedRow]:
    """Yield rows in a worker thread, fetching each page on the event loop (one hop per page)."""

    async def next_page() -> list[VerifiedRow] | None:
        return await anext(pages, None)

    while (page := asyncio.run_coroutine_threadsafe(next_page(), loop).result()) is not None:
        yield from page


async def verify_store(
    store: Store,
    origins: list[str],
    keys: KeyRing,
    *,
    trusted: StoredCheckpoint | None = None,
    options: Options = DEFAULT_OPTIONS,
    on_progress: Callable[[int], None] | None = None,
    tsa: TimestampTrust | None = None,
) -> Report:
    """Verify the logs of ``origins`` as stored, streaming records one page at a time, with what the
    store's searches match them by (a record hidden from searches is a finding too).

    The verifier runs in a worker thread so the loop stays free to fetch the next page. With
    ``tsa``, the checkpoints' RFC 3161 tokens are read and verified too.

    Raises:
        StorageError: the store cannot be read (nothing is concluded about the log then).
    """
    checkpoints: list[StoredCheckpoint] = []
    timestamps: list[StoredTimestamp] = []
    for origin in origins:
        checkpoints += await fetch_all_checkpoints(store, origin)
        if tsa is not None:
            timestamps += await fetch_all_timestamps(store.checkpoint_timestamps, origin)
    loop = asyncio.get_running_loop()
    pages = _pages(store, origins)
    try:
        return await asyncio.to_thread(
            verify_log,
            _blocking_entries(pages, loop),
            checkpoints,
            keys,
            trusted,
            on_progress,
            options=options,
            timestamps=timestamps,
            tsa=tsa,
        )
    finally:
        await pages.aclose()


async def count_records(store: AuditStore, origins: list[str]) -> int:
    """Return the sum of the stored tree sizes (an upper bound for a progress bar)."""
    total = 0
    for origin in origins:
        head = await store.fetch_head(origin)
        total += head.tree_size if head is not None else 0
    return total


async def fetch_retention_frontier(store: AuditStore, origin: str, tree_size: int) -> Frontier | None:
    """Return the frontier a retention checkpoint of ``origin`` at ``tree_size`` carries, or None.

    The note's signature is not checked here: whoever relies on what it builds checks it (the
    verifier, or a proof's holder against the signed root).

    Raises:
        StorageError: the store cannot be read.
    """
    limit = CHECKPOINT_PAGE
    while True:  # heartbeats may repeat a size: read until a page reaches past it
        page = await store.fetch_checkpoints(origin, tree_size, limit)
        at_size = [stored for stored in page if stored.tree_size == tree_size]
        if len(at_size) < limit:
            break
        limit *= 2
    return retention_frontier(at_size, tree_size)


def retention_frontier(checkpoints: Iterable[StoredCheckpoint], tree_size: int) -> Frontier | None:
    """The frontier carried by the first well-formed retention checkpoint at ``tree_size`` among
    ``checkpoints``, or None (signatures unchecked, as in ``fetch_retention_frontier``)."""
    for stored in checkpoints:
        if stored.tree_size != tree_size:
            continue
        try:
            frontier = parse_retention(parse_checkpoint(parse_signed_note(stored.note).text))
        except VerificationError:
            continue
        if frontier is not None:
            return frontier
    return None


def request_seq_of(entry: LogEntry) -> int | None:
    """Return ``correlation.request_seq`` of a record body, or None."""
    try:
        body: Any = json.loads(entry.body)
    except ValueError:
        return None
    correlation = body.get("correlation") if isinstance(body, dict) else None
    value = correlation.get("request_seq") if isinstance(correlation, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def fetch_interaction(store: AuditStore, origin: str, seq: int, window: int = 1000) -> list[LogEntry]:
    """Return the request record of the interaction ``seq`` belongs to, then every record naming it.

    ``seq`` may be the request or any record with ``request_seq``; linked records (approval,
    response) are searched in the ``window`` records after the request.

    Raises:
        StorageError: no record ``seq`` is stored.
    """
    entry = await store.fetch_entry(origin, seq)
    if entry is None:
        raise StorageError(f"no record {origin!r}/{seq} in the store")
    linked = request_seq_of(entry)
    if linked is not None and linked != seq:
        request = await store.fetch_entry(origin, linked)
        if request is None:
            return [entry]
        entry = request
    later = await store.fetch_entries(origin, entry.seq + 1, entry.seq + 1 + window)
    return [entry, *(e for e in later if request_seq_of(e) == entry.seq)]


async def follow_entries(
    store: AuditStore,
    origin: str,
    start_seq: int,
    poll_s: float,
    follow: bool,
    *,
    on_retry: RetryNotice | None = None,
) -> AsyncIterator[LogEntry]:
    """Yield records from ``start_seq`` on; when ``follow``, keep polling for new seqs every ``poll_s``.

    A failed read after the first pass is retried, not raised: a watcher should outlive a store
    restart or failover. Each pause doubles the one before, from ``poll_s`` up to
    ``FOLLOW_RETRY_MAX_S``, and ``on_retry`` hears of it first.

    Raises:
        StorageError: the store cannot be read on the first pass.
    """
    next_seq = start_seq
    first_pass = True
    pause_s = 0.0
    while True:
        try:
            async for entry in store.stream_entries(origin, next_seq, PAGE_RECORDS):
                next_seq = entry.seq + 1
                yield entry
        except StorageError as exc:
            if first_pass:
                raise
            pause_s = min(FOLLOW_RETRY_MAX_S, max(poll_s, 2 * pause_s))
            if on_retry is not None:
                on_retry(exc, pause_s)
            await asyncio.sleep(pause_s)
            continue
        first_pass, pause_s = False, 0.0
        if not follow:
            return
        await asyncio.sleep(poll_s)


async def fetch_tail_start(store: AuditStore, origin: str, last: int) -> int:
    """Return the seq ``last`` records before the stored head (0 for a short log).

    Raises:
        StorageError: the store holds no log of ``origin`` (or cannot be read).
    """
    head = await store.fetch_head(origin)
    if head is None:
        raise StorageError(f"no log of origin {origin!r} in the store")
    return max(0, head.tree_size - last)
