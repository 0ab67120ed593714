"""The audit writer of one origin: sequences and hashes records as they arrive, commits them in groups.

Owns the origin's seq and Merkle frontier, group commit (the records staged in one turn of the
event loop go to the store as one batch, queued behind the batches still committing, so the store
starts on them the moment the disk is free and merges what queued meanwhile into one fsync),
fail-closed vs best-effort handling of store failures, and checkpoint cadence (every N records,
every T seconds, heartbeat when idle). The note format and signing are
audit/checkpoint.py's; copying checkpoints out of the database is audit/witness.py's ``WitnessFanout``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from bastion.audit.canonical import canonical_bytes
from bastion.audit.checkpoint import CLOSED_EXTENSION, Checkpoint, render_time_extension, sign_checkpoint
from bastion.audit.compact import Frontier
from bastion.audit.entry import LogEntry, StoredCheckpoint
from bastion.audit.hashing import hash_leaf
from bastion.audit.keys import SigningKey, load_signing_key
from bastion.audit.record import AuditEvent, EventKind, render_body, render_time
from bastion.audit.settings import AuditMode, AuditSettings
from bastion.audit.sinks import SinkFanout, build_sinks
from bastion.audit.witness import WitnessFanout, WitnessStats, build_witnesses
from bastion.errors import ConfigError, HeadConflictError, StorageError
from bastion.storage.base import AppendBatch, AuditStore, LogHead, RecordQuery, SearchColumns

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof of recording: the record's seq and leaf hash; ``durable`` is False only in best-effort loss."""

    seq: int | None
    leaf_hash: bytes | None
    durable: bool = True


@dataclass(slots=True)
class AuditLogStats:
    """Counters for /metrics; they only grow."""

    records_committed: int = 0
    batches_committed: int = 0
    records_lost: int = 0
    store_failures: int = 0
    checkpoints_committed: int = 0
    checkpoint_failures: int = 0


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """When to sign a checkpoint: after this many new records, after this long with new records, or when idle."""

    every_records: int = 1000
    every_s: float = 10.0
    heartbeat_s: float = 300.0


@dataclass(slots=True)
class _Staged:
    """A record sequenced and hashed against the staged frontier, waiting for its batch to commit."""

    event: AuditEvent
    stamp: str
    waiter: asyncio.Future[Receipt] | None
    entry: LogEntry
    columns: SearchColumns
    losses: int = 0
    """For a records_lost record: how many losses it reports."""


@dataclass(slots=True)
class _InFlight:
    """A batch handed to the store, and what committing it means for the log."""

    batch: list[_Staged]
    entries: tuple[LogEntry, ...]
    frontier: Frontier
    checkpoint: StoredCheckpoint | None
    commit: asyncio.Future[None]


MAX_BATCHES_IN_FLIGHT = 8
"""Batches queued at the store at once; past this, staged records wait and the next batch grows."""


class AuditLog:
    """Append-only audit log of one origin over an ``AuditStore``; ``await start()`` before appending."""

    def __init__(
        self,
        store: AuditStore,
        *,
        origin: str,
        signing_key: SigningKey,
        mode: AuditMode = AuditMode.DURABLE,
        checkpoints: CheckpointPolicy = CheckpointPolicy(),
        witnesses: WitnessFanout | None = None,
        sinks: SinkFanout | None = None,
        max_queue_records: int = 10_000,
        max_batch_records: int = 1024,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._origin = origin
        self._key = signing_key
        self._mode = mode
        self._policy = checkpoints
        self._witnesses = witnesses
        self.sinks = sinks
        """Copies of committed records for SIEMs (best-effort; the store stays the truth)."""
        self._max_batch = max_batch_records
        self._max_staged = max_queue_records
        self._clock = clock
        self._frontier = Frontier()
        """What the store holds (or, while unhealthy, what it held when last known)."""
        self._staged: list[_Staged] = []
        self._staged_frontier = Frontier()
        """``_frontier`` plus the leaves in flight and staged: the seq and tree the next record joins."""
        self._in_flight: collections.deque[_InFlight] = collections.deque()
        """Batches at the store, oldest first; they commit (or fail) in this order."""
        self._in_flight_records = 0
        self._returned = 0
        """How many records at the front of ``_staged`` came back from batches that failed only
        because one before them did (they wait there for recovery, in their old order)."""
        self._work = asyncio.Event()
        self._space = asyncio.Event()
        self._healthy = False
        self._lost_unrecorded = 0
        self._checkpoint_size = -1
        self._checkpoint_asked = -1
        """Tree size of the newest checkpoint committed or in flight: the next one is due from here."""
        self._checkpoint_at = -math.inf
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.stats = AuditLogStats()

    @classmethod
    def from_settings(cls, store: AuditStore, settings: AuditSettings, *, http_client: httpx.AsyncClient) -> AuditLog:
        """Build the log the ``audit:`` section describes (key loaded now, witnesses included).

        Raises:
            ConfigError: the signing key is missing or malformed, or is not named ``settings.key_name``.
        """
        key = load_signing_key(path=settings.signing_key_file, env_var=settings.signing_key_env)
        if settings.key_name is not None and key.name != settings.key_name:
            raise ConfigError(f"signing key is named {key.name!r}, audit.key_name expects {settings.key_name!r}")
        return cls(
            store,
            origin=settings.origin,
            signing_key=key,
            mode=settings.mode,
            checkpoints=CheckpointPolicy(
                settings.checkpoint_every_records, settings.checkpoint_every_s, settings.heartbeat_s
            ),
            witnesses=build_witnesses(settings.witnesses, http_client),
            sinks=build_sinks(settings.sinks, http_client),
            max_queue_records=settings.max_queue_records,
            max_batch_records=settings.max_batch_records,
        )

    @property
    def healthy(self) -> bool:
        """Whether the last write reached the store (readiness)."""
        return self._healthy

    @property
    def mode(self) -> AuditMode:
        """The current failure mode."""
        return self._mode

    @property
    def witness_stats(self) -> WitnessStats | None:
        """Delivery counters of the checkpoint witnesses, or None without witnesses."""
        return self._witnesses.stats if self._witnesses is not None else None

    @property
    def tree_size(self) -> int:
        """Number of records committed so far."""
        return self._frontier.size

    async def start(self) -> None:
        """Resume seq and frontier from the store and start the writer task.

        Raises:
            StorageError: the store cannot be read (the gateway must not start).
        """
        await self._recover()
        latest = await self._store.fetch_latest_checkpoint(self._origin)
        self._checkpoint_size = self._checkpoint_asked = latest.tree_size if latest is not None else -1
        if self._witnesses is not None:
            self._witnesses.start()
        if self.sinks is not None:
            self.sinks.start()
        self._task = asyncio.create_task(self._serve(), name=f"audit-writer:{self._origin}")

    async def append(self, event: AuditEvent) -> Receipt:
        """Queue ``event`` and return once it is committed (waits while the queue is full).

        Raises:
            StorageError: the record could not be made durable (durable mode), or the log is closed.
            CanonicalEncodingError: the event holds a value with no canonical JSON form.
        """
        return await (await self.enqueue(event))

    async def enqueue(self, event: AuditEvent) -> asyncio.Future[Receipt]:
        """Queue ``event`` (waiting while the queue is full) and return the future of its receipt.

        Once this returns the record is sequenced and will be committed or refused, whatever
        becomes of its caller; a caller cancelled while this waits for room has queued nothing.

        Raises:
            StorageError: the log is closed (the future raises it when the record is not durable).
            CanonicalEncodingError: the event holds a value with no canonical JSON form.
        """
        self._check_running()
        while self.staged_records >= self._max_staged:
            self._space.clear()
            await self._space.wait()
            self._check_running()
        waiter: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._stage(event, waiter, render_time(self._clock()))
        self._work.set()
        return waiter

    def _check_running(self) -> None:
        if self._closing or self._task is None or self._task.done():
            raise StorageError("audit log is not running")

    @property
    def staged_records(self) -> int:
        """Records sequenced but not yet committed (bounded by ``max_queue_records``)."""
        return len(self._staged) + self._in_flight_records

    async def set_mode(self, mode: AuditMode, *, subject: str | None = None, reason: str | None = None) -> Receipt:
        """Switch failure mode; the switch is itself a record, written before it takes effect.

        Raises:
            StorageError: the mode_changed record could not be made durable (mode unchanged).
        """
        detail = {"from": self._mode.value, "to": mode.value} | ({"reason": reason} if reason else {})
        receipt = await self.append(AuditEvent(kind=EventKind.MODE_CHANGED, subject=subject, detail=detail))
        self._mode = mode
        return receipt

    async def search_entries(self, query: RecordQuery, *, subject: str | None) -> list[LogEntry]:
        """Record a log_read by ``subject`` (durably, first), then return the matching records.

        Raises:
            StorageError: the log_read record or the search failed.
        """
        await self.record_read(subject, {"query": {k: v for k, v in asdict(query).items() if v is not None}})
        return await self._store.search_entries(query)

    async def record_read(self, subject: str | None, detail: Mapping[str, Any]) -> None:
        """Record that ``subject`` reads the log; call before releasing anything read.

        Raises:
            StorageError: the log_read record is not durable, in best_effort mode too (a read of
                the log is never released without its record).
        """
        receipt = await self.append(AuditEvent(kind=EventKind.LOG_READ, subject=subject, detail=detail))
        if not receipt.durable:
            raise StorageError("the read of the audit log could not be recorded")

    async def aclose(self) -> None:
        """Commit everything queued, write a final checkpoint, stop the writer and flush witnesses."""
        if self._closing or self._task is None:
            return
        self._closing = True
        self._work.set()
        self._space.set()  # appends waiting for room see the log closing
        await self._task
        if self._witnesses is not None:
            await self._witnesses.aclose()
        if self.sinks is not None:
            await self.sinks.aclose()

    # -- writer task -----------------------------------------------------------------------------

    def _stage(self, event: AuditEvent, waiter: asyncio.Future[Receipt] | None, stamp: str, losses: int = 0) -> None:
        """Sequence, encode and hash ``event`` onto the staged frontier (synchronous: no await may split it).

        Raises:
            CanonicalEncodingError: the event has no canonical JSON form (nothing is staged).
        """
        frontier = self._staged_frontier
        doc = render_body(event, self._origin, frontier.size, stamp)
        body = canonical_bytes(doc)
        entry = LogEntry(self._origin, frontier.size, stamp, event.kind._value_, body, hash_leaf(body))
        frontier.append(entry.leaf_hash)
        self._staged.append(_Staged(event, stamp, waiter, entry, SearchColumns.from_doc(doc), losses))

    def _restage(self) -> None:
        """Sequence everything staged again on top of ``_frontier``, after a failure moved it.

        Only with nothing in flight. A best-effort loss goes first, as a record of its own, so the
        gap shows in the log.
        """
        staged = [item for item in self._staged if not item.losses]
        self._staged = []
        self._returned = 0
        self._staged_frontier = self._frontier.copy()
        if self._lost_unrecorded:
            detail = {"records_lost": self._lost_unrecorded}
            stamp = staged[0].stamp if staged else render_time(self._clock())  # keeps times in seq order
            self._stage(AuditEvent(kind=EventKind.RECORDS_LOST, detail=detail), None, stamp, self._lost_unrecorded)
        for item in staged:
            self._stage(item.event, item.waiter, item.stamp)  # encoded once already: cannot fail now

    async def _serve(self) -> None:
        loss_flushed = final_round = False
        while True:
            if self._staged and len(self._in_flight) < MAX_BATCHES_IN_FLIGHT:
                if self._healthy:
                    self._submit()
                    continue
                if not self._in_flight:  # after a failure, once everything sent has landed or failed
                    await self._recover_or_refuse()
                    continue
            if self._closing and not self._staged and not self._in_flight:
                if self._lost_unrecorded and not loss_flushed:
                    # Losses are otherwise recorded ahead of the next records; at shutdown there
                    # are none, so the records_lost record goes alone (one try: the store may be down).
                    loss_flushed = True
                    self._restage()
                    continue
                await self._commit_checkpoint(final=True)
                if not self._staged or final_round:
                    return
                # The checkpoint's recovery found the store back and staged the records_lost
                # record again: one more round writes it (one only: the store may fail again).
                final_round = True
                continue
            self._work.clear()
            if self._staged or self._in_flight:
                await self._work.wait()  # set by the next append or the next batch that lands
                continue
            try:
                async with asyncio.timeout(max(0.0, self._checkpoint_due() - time.monotonic())):
                    await self._work.wait()
            except TimeoutError:
                await self._commit_checkpoint()

    def _checkpoint_rides_along(self, size: int) -> bool:
        """Whether the batch ending at ``size`` carries a checkpoint: every N records, or every T
        seconds under load too (the idle timer in ``_serve`` only fires when nothing is queued)."""
        if size - max(self._checkpoint_asked, 0) >= self._policy.every_records:
            return True
        pending = self._checkpoint_asked > self._checkpoint_size
        return not pending and time.monotonic() >= self._checkpoint_at + self._policy.every_s

    def _checkpoint_due(self) -> float:
        grew = self._frontier.size > self._checkpoint_size
        return self._checkpoint_at + (self._policy.every_s if grew else self._policy.heartbeat_s)

    async def _recover_or_refuse(self) -> None:
        try:
            await self._recover()
        except Exception as exc:  # the store's head is unreadable or malformed: refuse, retry next batch
            failure = exc if isinstance(exc, StorageError) else StorageError(f"cannot reload the log head: {exc}")
            self._fail(self._take_batch(refusing=True)[0], failure)
            self._space.set()

    def _take_batch(self, *, refusing: bool = False) -> tuple[list[_Staged], Frontier]:
        """Unstage the next batch and the frontier at its end.

        A batch holds at most ``max_batch_records`` and, unless it is taken only to be refused,
        never runs past the size at which the next checkpoint is due, so that no more than
        ``every_records`` records ever lie between two checkpoints (a verifier holds the log to that).
        """
        start = self._in_flight[-1].frontier if self._in_flight else self._frontier
        due_at = max(self._checkpoint_asked, 0) + self._policy.every_records
        limit = self._max_batch if refusing else min(self._max_batch, max(1, due_at - start.size))
        if len(self._staged) <= limit:
            batch, self._staged = self._staged, []
            frontier = self._staged_frontier.copy()
        else:
            batch, self._staged = self._staged[:limit], self._staged[limit:]
            frontier = start.copy()
            for item in batch:
                frontier.append(item.entry.leaf_hash)
        self._returned = max(0, self._returned - len(batch))
        return batch, frontier

    def _submit(self) -> None:
        """Hand the next batch to the store without waiting for it; ``_landed`` settles it."""
        batch, frontier = self._take_batch()
        checkpoint = None
        entries = tuple(item.entry for item in batch)
        commit: asyncio.Future[None]
        try:
            if self._checkpoint_rides_along(frontier.size):
                checkpoint = self._sign(frontier, self._clock())
                self._checkpoint_asked = frontier.size
            head = LogHead(self._origin, frontier.size, frontier.hashes)
            columns = tuple(item.columns for item in batch)
            commit = asyncio.ensure_future(
                self._store.append_batch(AppendBatch(head, entries, (checkpoint,) if checkpoint else (), columns))
            )
        except Exception as exc:  # refused at the door (store closed, signing failed): fails like a commit
            commit = asyncio.get_running_loop().create_future()
            commit.set_exception(exc)
        self._in_flight.append(_InFlight(batch, entries, frontier, checkpoint, commit))
        self._in_flight_records += len(batch)
        commit.add_done_callback(self._landed)

    def _landed(self, _: asyncio.Future[None]) -> None:
        """Settle the batches whose commits have returned, oldest first (a store answers in order)."""
        while self._in_flight and self._in_flight[0].commit.done():
            flight = self._in_flight.popleft()
            self._in_flight_records -= len(flight.batch)
            commit = flight.commit
            exc = StorageError("audit commit was cancelled") if commit.cancelled() else commit.exception()
            try:
                if exc is None:
                    self._committed(flight)
                    continue
                self._checkpoint_asked = self._checkpoint_size
                if isinstance(exc, HeadConflictError) and not self._healthy:
                    # Queued behind a batch that failed, it found the head short of where that
                    # batch was to leave it, and wrote nothing: not its failure. It goes back, in
                    # order, to be sequenced again after recovery.
                    self._staged[self._returned : self._returned] = flight.batch
                    self._returned += len(flight.batch)
                    continue
                if not isinstance(exc, StorageError):
                    log.error("audit writer failed unexpectedly", exc_info=exc)
                    exc = StorageError(f"audit writer failed: {type(exc).__name__}")
                self._fail(flight.batch, exc)
            except Exception as bug:  # a bug must not strand the waiters of this batch
                log.exception("audit writer failed unexpectedly")
                self._fail(flight.batch, StorageError(f"audit writer failed: {type(bug).__name__}"))
        self._work.set()
        self._space.set()

    def _committed(self, flight: _InFlight) -> None:
        self._frontier = flight.frontier
        entries = flight.entries
        self._lost_unrecorded -= sum(item.losses for item in flight.batch)
        self.stats.records_committed += len(entries)
        self.stats.batches_committed += 1
        if self.sinks is not None:
            self.sinks.offer(entries)  # never blocks or raises: the batch is already committed
        for item in flight.batch:
            if item.waiter is not None and not item.waiter.done():
                item.waiter.set_result(Receipt(item.entry.seq, item.entry.leaf_hash))
        if flight.checkpoint is not None:
            self._checkpoint_committed(flight.checkpoint)

    def _fail(self, batch: list[_Staged], exc: StorageError) -> None:
        """Settle a batch that did not commit; what is still staged is sequenced again before its turn."""
        self._healthy = False
        self.stats.store_failures += 1
        waiting = [item.waiter for item in batch if item.waiter is not None and not item.waiter.done()]
        if self._mode is AuditMode.BEST_EFFORT:
            # A caller that gave up (its waiter cancelled) still had a record in this batch.
            lost = sum(1 for item in batch if item.waiter is not None and (item.waiter.cancelled() or not item.waiter.done()))
            self._lost_unrecorded += lost
            self.stats.records_lost += lost
            log.error("audit store failed; %d records lost (best_effort mode): %s", lost, exc)
            for waiter in waiting:
                waiter.set_result(Receipt(None, None, durable=False))
            return
        log.error("audit store failed; %d calls refused (durable mode): %s", len(waiting), exc)
        for waiter in waiting:
            try:
                raise StorageError("audit record could not be made durable") from exc
            except StorageError as refused:
                waiter.set_exception(refused)

    async def _recover(self) -> None:
        """Reload seq and frontier: a failed commit may still have landed, so the store is the truth."""
        head = await self._store.fetch_head(self._origin)
        self._frontier = Frontier(head.tree_size, head.frontier) if head is not None else Frontier()
        self._healthy = True
        self._restage()  # in the same step as the reload: nothing can be staged on the old frontier

    # -- checkpoints -----------------------------------------------------------------------------

    def _sign(self, frontier: Frontier, moment: datetime, *, closing: bool = False) -> StoredCheckpoint:
        root = frontier.root()
        extensions = (render_time_extension(moment), *((CLOSED_EXTENSION,) if closing else ()))
        body = Checkpoint(self._origin, frontier.size, root, extensions)
        return StoredCheckpoint(self._origin, frontier.size, root, sign_checkpoint(body, self._key), render_time(moment))

    def _checkpoint_committed(self, checkpoint: StoredCheckpoint) -> None:
        self._checkpoint_size = checkpoint.tree_size
        self._checkpoint_asked = max(self._checkpoint_asked, checkpoint.tree_size)
        self._checkpoint_at = time.monotonic()
        self.stats.checkpoints_committed += 1
        if self._witnesses is not None:
            self._witnesses.submit(checkpoint)

    async def _commit_checkpoint(self, final: bool = False) -> None:
        """Sign and store a checkpoint of the current tree (timed, heartbeat or final).

        The final one is signed even when the newest checkpoint already covers the whole tree: its
        ``bastion-closed`` line is the signed statement that the writer stopped on purpose, after
        which a verifier expects no heartbeat (verifier/origin.py).
        """
        try:
            if not self._healthy:
                await self._recover()
            checkpoint = self._sign(self._frontier, self._clock(), closing=final)
            head = LogHead(self._origin, self._frontier.size, self._frontier.hashes)
            await self._store.append_batch(AppendBatch(head, (), (checkpoint,)))
        except Exception as exc:  # a failed checkpoint refuses no caller; it is counted and retried
            self._healthy = False
            self._checkpoint_at = time.monotonic()  # retry at the next due time, not in a hot loop
            self.stats.checkpoint_failures += 1
            log.error("audit checkpoint of %s failed: %s", self._origin, exc)
            return
        self._checkpoint_committed(checkpoint)

