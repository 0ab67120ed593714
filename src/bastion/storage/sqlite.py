"""SQLite implementation of ``AuditStore``: one writer thread with group commit, reads off the loop.

Every write is a job on a queue consumed by one dedicated thread that owns the only writing
connection (WAL, synchronous=FULL); the thread drains everything queued into one transaction,
each job inside its own savepoint, so concurrent batches share one fsync. Appends queued while a
commit is on the disk are merged when each continues the one before, and the thread starts on
them as soon as that commit returns, without a trip through the event loop. Committed records
are filed into the search index afterwards, off the durable commit (migration 0006). Reads of a
file database use separate connections in a small executor; an in-memory database serves reads
on the writer thread, since its data is invisible to other connections. Opened ``READ_ONLY``, a
store has no writer thread at all, and its readers open the file read-only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar
from urllib.parse import quote

from bastion.audit.entry import LogEntry, StoredCheckpoint
from bastion.errors import StorageError
from bastion.storage import _sql
from bastion.storage.base import (
    LOWEST_SEQ,
    AppendBatch,
    LogHead,
    OpenMode,
    RecordQuery,
    UnpreparedStoreError,
    VerifiedRow,
    iterate_pages,
    unpack_frontier,
)
from bastion.storage.sqlite_approvals import SqliteApprovalStore
from bastion.storage.sqlite_keys import SqliteApiKeyStore
from bastion.storage.sqlite_pins import SqliteToolPinStore
from bastion.storage.sqlite_search import SearchFiler, indexed_page, search
from bastion.storage.sqlite_setup import check_migrated, migrate, use_wal
from bastion.storage.sqlite_timestamps import SqliteCheckpointTimestampStore

T = TypeVar("T")
log = logging.getLogger(__name__)

MEMORY = ":memory:"
READ_THREADS = 2
BUSY_TIMEOUT_S = 5.0


@dataclass(slots=True)
class _Job:
    """One unit of work for the writer thread and the future its caller awaits."""

    run: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    write: bool
    append: _sql.AppendRows | None = None
    """Set for an audit append, which the thread may merge with the appends queued after it."""
    outcome: tuple[bool, Any] = field(default=(False, None))


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _connect(path: str, mode: OpenMode) -> sqlite3.Connection:
    """A connection to ``path``. Without ``OpenMode.CREATE``, SQLite itself refuses to create the
    file (a URI with ``mode=rw``), and under ``READ_ONLY`` to write to it (``mode=ro``)."""
    if mode is OpenMode.CREATE or path == MEMORY:
        target, uri = path, False
    else:
        target, uri = f"file:{quote(os.path.abspath(path))}?mode={'ro' if mode is OpenMode.READ_ONLY else 'rw'}", True
    conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S, uri=uri)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


INSERT_ROWS_PER_STATEMENT = 64
"""Rows per multi-row INSERT: 640 parameters, well under SQLite's 32,766. One statement steps
once with the GIL released, where ``executemany`` releases and re-takes it per row, and every
re-take waits for the event loop thread to let go."""


def _insert_records(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    for start in range(0, len(rows), INSERT_ROWS_PER_STATEMENT):
        chunk = rows[start : start + INSERT_ROWS_PER_STATEMENT]
        conn.execute(_sql.insert_records_sql(_sql.qmark, len(chunk)), [value for row in chunk for value in row])


def _append_rows(conn: sqlite3.Connection, rows: _sql.AppendRows) -> None:
    if conn.execute(_sql.advance_head_sql(_sql.qmark, first=rows.previous_size == 0), rows.head_row()).rowcount != 1:
        found = conn.execute("SELECT tree_size FROM log_heads WHERE origin = ?", (rows.origin,)).fetchone()
        raise rows.conflict(found[0] if found else None)
    _insert_records(conn, rows.records)
    if rows.checkpoints:
        conn.executemany(_sql.insert_checkpoint_sql(_sql.qmark), rows.checkpoints)


def _units(writes: list[_Job]) -> list[tuple[Callable[[sqlite3.Connection], Any], list[_Job]]]:
    """The writes to run, in order: each run of appends that continue one another becomes one."""
    units: list[tuple[Callable[[sqlite3.Connection], Any], list[_Job]]] = []
    appends: list[tuple[_sql.AppendRows, _Job]] = []
    for job in [*writes, None]:
        if job is not None and job.append is not None:
            appends.append((job.append, job))
            continue
        for rows, jobs in _sql.merge_queued(appends):
            units.append((jobs[0].run if len(jobs) == 1 else functools.partial(_append_rows, rows=rows), jobs))
        appends.clear()
        if job is not None:
            units.append((job.run, [job]))
    return units


class SqliteStore:
    """``AuditStore`` over one SQLite file (or ``:memory:`` for tests); create with ``await SqliteStore.open(path)``."""

    def __init__(self, path: str, mode: OpenMode = OpenMode.CREATE) -> None:
        self._path = path
        self._mode = mode
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=f"bastion-sqlite-writer:{path}", daemon=True)
        self._signal_ready: Callable[[bool, Any], None] = lambda ok, value: None
        self._reader_pool: ThreadPoolExecutor | None = None
        self._reader_local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._closed = False
        self._filer: SearchFiler | None = None
        """The writer thread's, from when it has opened the database."""

    @classmethod
    async def open(cls, path: str, mode: OpenMode = OpenMode.CREATE) -> SqliteStore:
        """Open the database at ``path``: create and migrate it, or, by ``mode``, check that it needs neither.

        Raises:
            UnpreparedStoreError: without ``OpenMode.CREATE``: no file at ``path`` (or ``:memory:``,
                which is new on every open), no Bastion schema in it, or an older one.
            StorageError: the file cannot be opened or a migration fails.
        """
        if mode is not OpenMode.CREATE:
            if path == MEMORY:
                raise UnpreparedStoreError("an in-memory SQLite store is new and empty on every open; name a database file")
            if not os.path.isfile(path):
                raise UnpreparedStoreError(f"no SQLite database at {path}; check the store URL")
        store = cls(path, mode)
        if mode is OpenMode.READ_ONLY:
            store._reader_pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="bastion-sqlite-reader")
            try:
                await store._read(functools.partial(check_migrated, path=path))
            except BaseException:
                await store.aclose()
                raise
            return store
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def signal_ready(ok: bool, value: Any) -> None:
            loop.call_soon_threadsafe(_settle, ready, ok, value)

        store._signal_ready = signal_ready
        store._thread.start()
        try:
            await ready
        except BaseException:
            await store.aclose()
            raise
        if path != MEMORY:
            store._reader_pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="bastion-sqlite-reader")
        return store

    # -- writer thread ---------------------------------------------------------------------------

    def _serve(self) -> None:
        opened: list[sqlite3.Connection] = []
        try:
            conn = _connect(self._path, self._mode)
            opened.append(conn)
            if self._mode is not OpenMode.CREATE:
                check_migrated(conn, self._path)  # before anything is written to a file that may not be a store
            if self._path != MEMORY:
                use_wal(conn, BUSY_TIMEOUT_S)
            conn.execute("PRAGMA synchronous = FULL")
            if self._mode is OpenMode.CREATE:
                migrate(conn)
            if self._path == MEMORY:
                filing = conn  # nothing reaches a disk; a second connection would see another database
            else:
                # Filing need not wait for the disk: a crash loses filing, which the next open
                # finds and does again. In WAL mode the next durable commit's fsync covers it anyway.
                filing = _connect(self._path, self._mode)
                opened.append(filing)
                filing.execute("PRAGMA synchronous = NORMAL")
                filing.execute("PRAGMA busy_timeout = 0")
            filer = self._filer = SearchFiler(filing)
            filer.find_unfiled()
        except (sqlite3.Error, UnpreparedStoreError) as exc:
            for connection in reversed(opened):
                connection.close()
            failure = exc if isinstance(exc, UnpreparedStoreError) else _translate(exc, "cannot open SQLite store")
            self._signal_ready(False, failure)
            return
        self._signal_ready(True, None)
        try:
            while True:
                wait_s = filer.wait_s()
                try:
                    first = self._jobs.get() if wait_s is None else self._jobs.get(timeout=wait_s)
                except queue.Empty:
                    filer.file()
                    continue
                if first is None:
                    filer.file()
                    return
                jobs, stop = [first], False
                while not stop:
                    try:
                        more = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                    else:
                        jobs.append(more)
                self._run_group(conn, jobs)
                if stop:
                    filer.file()
                    return
        finally:
            for connection in reversed(opened):
                connection.close()

    def _run_group(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        reads = [j for j in jobs if not j.write]
        writes = [j for j in jobs if j.write]
        for job in reads:
            job.outcome = _attempt(job.run, conn)
        if writes:
            self._commit_group(conn, writes)
        for job in jobs:
            ok, value = job.outcome
            try:
                job.loop.call_soon_threadsafe(_settle, job.future, ok, value)
            except RuntimeError:
                log.warning("sqlite job finished after its event loop closed")

    def _commit_group(self, conn: sqlite3.Connection, writes: list[_Job]) -> None:
        units = _units(writes)
        filed = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            if len(units) == 1:
                # The common case: no neighbour to protect. Every statement spared is one less wait
                # for the GIL while the event loop thread is busy.
                outcomes = [_attempt(units[0][0], conn)]
                if outcomes[0][0]:
                    filed = self._file_under_load(conn)
                    conn.execute("COMMIT")
                else:
                    conn.execute("ROLLBACK")
            else:
                outcomes = []
                for run, _ in units:
                    # A savepoint per unit: one failing is undone without failing its neighbours.
                    conn.execute("SAVEPOINT job")
                    outcomes.append(_attempt(run, conn))
                    if not outcomes[-1][0]:
                        conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                filed = self._file_under_load(conn)
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(False, _translate(exc, "SQLite commit failed"))] * len(units)
        else:
            if filed and self._filer is not None:
                self._filer.filed()
        for (_, jobs), outcome in zip(units, outcomes, strict=True):
            for job in jobs:
                job.outcome = outcome
                if outcome[0] and job.append is not None and self._filer is not None:
                    self._filer.committed(job.append.origin, job.append.tree_size, len(job.append.records))

    def _file_under_load(self, conn: sqlite3.Connection) -> bool:
        """While writes keep coming, file inside the durable commit once enough records wait (see
        ``SearchFiler``); True if it did, to be confirmed once the commit is through."""
        return self._filer is not None and self._filer.due_under_load and self._filer.file_within(conn)

    # -- submission ------------------------------------------------------------------------------

    async def _write(self, run: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(run, write=True)

    def _submit(
        self, run: Callable[[sqlite3.Connection], T], *, write: bool, append: _sql.AppendRows | None = None
    ) -> asyncio.Future[T]:
        """Queue a job for the writer thread now; the future settles when it has run."""
        if self._closed:
            raise StorageError("SQLite store is closed")
        if self._mode is OpenMode.READ_ONLY:
            raise StorageError("SQLite store is opened read-only")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(run, future, loop, write, append))
        return future

    async def _read(self, run: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader_pool is None:
            return await self._submit(run, write=False)
        if self._closed:
            raise StorageError("SQLite store is closed")
        loop = asyncio.get_running_loop()
        ok, value = await loop.run_in_executor(self._reader_pool, self._read_in_thread, run)
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def _read_in_thread(self, run: Callable[[sqlite3.Connection], T]) -> tuple[bool, Any]:
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            try:
                conn = _connect(self._path, self._mode)
            except sqlite3.Error as exc:
                return False, _translate(exc, "cannot open SQLite reader")
            self._reader_local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return _attempt(run, conn)

    # -- other concerns, sharing this store's writer thread and readers -----------------------------

    @cached_property
    def api_keys(self) -> SqliteApiKeyStore:
        """The ``ApiKeyStore`` of this database."""
        return SqliteApiKeyStore(self)

    @cached_property
    def tool_pins(self) -> SqliteToolPinStore:
        """The ``ToolPinStore`` (a ``PinStore``) of this database."""
        return SqliteToolPinStore(self)

    @cached_property
    def approvals(self) -> SqliteApprovalStore:
        """The ``ApprovalStore`` of this database."""
        return SqliteApprovalStore(self)

    @cached_property
    def checkpoint_timestamps(self) -> SqliteCheckpointTimestampStore:
        """The ``CheckpointTimestampStore`` of this database."""
        return SqliteCheckpointTimestampStore(self)

    # -- AuditStore ------------------------------------------------------------------------------

    def append_batch(self, batch: AppendBatch) -> asyncio.Future[None]:
        """Queue records, checkpoints and head for one transaction; see ``AuditStore.append_batch``."""
        rows = _sql.AppendRows.of(batch)
        return self._submit(functools.partial(_append_rows, rows=rows), write=True, append=rows)

    async def fetch_origins(self) -> list[str]:
        """Every origin with a head, a record, a checkpoint or a search index row, sorted; see
        ``AuditStore.fetch_origins``."""
        return await self._read(lambda c: [row[0] for row in c.execute(_sql.SQLITE_ORIGINS_SQL)])

    async def fetch_head(self, origin: str) -> LogHead | None:
        """Return the origin's stored head, or None."""

        def run(conn: sqlite3.Connection) -> LogHead | None:
            row = conn.execute("SELECT tree_size, frontier FROM log_heads WHERE origin = ?", (origin,)).fetchone()
            return None if row is None else LogHead(origin, row[0], unpack_frontier(row[1]))

        return await self._read(run)

    async def fetch_entry(self, origin: str, seq: int) -> LogEntry | None:
        """Return one record or None."""
        rows = await self.fetch_entries(origin, seq, seq + 1)
        return rows[0] if rows else None

    async def fetch_entries(self, origin: str, start_seq: int, end_seq: int) -> list[LogEntry]:
        """Return records with ``start_seq <= seq < end_seq`` in seq order."""
        sql = f"SELECT {_sql.ENTRY_COLUMNS} FROM records WHERE origin = ? AND seq >= ? AND seq < ? ORDER BY seq"
        return await self._read(lambda c: [_sql.entry_from_row(r) for r in c.execute(sql, (origin, start_seq, end_seq))])

    def stream_entries(self, origin: str, start_seq: int = 0, batch_size: int = 1000) -> AsyncIterator[LogEntry]:
        """Yield records from ``start_seq`` on in seq order, ``batch_size`` per read."""
        sql = f"SELECT {_sql.ENTRY_COLUMNS} FROM records WHERE origin = ? AND seq >= ? ORDER BY seq LIMIT ?"

        async def fetch_page(from_seq: int, limit: int) -> list[LogEntry]:
            return await self._read(lambda c: [_sql.entry_from_row(r) for r in c.execute(sql, (origin, from_seq, limit))])

        return iterate_pages(fetch_page, start_seq, batch_size)

    async def stream_indexed_entries(self, origin: str, batch_size: int = 1000) -> AsyncIterator[list[VerifiedRow]]:
        """Yield pages of records with their search index rows, and the index rows that lack a
        record; see ``AuditStore.stream_indexed_entries`` and ``sqlite_search.indexed_page``."""
        if batch_size < 1:
            raise StorageError("batch_size must be positive")
        next_seq: int | None = LOWEST_SEQ
        while next_seq is not None:
            page, next_seq = await self._read(functools.partial(indexed_page, origin=origin, from_seq=next_seq, limit=batch_size))
            yield page

    async def fetch_checkpoints(self, origin: str, min_tree_size: int = 0, limit: int = 1000) -> list[StoredCheckpoint]:
        """Return checkpoints with ``tree_size >= min_tree_size``, oldest first."""
        sql = (
            f"SELECT {_sql.CHECKPOINT_COLUMNS} FROM checkpoints WHERE origin = ? AND tree_size >= ?"
            " ORDER BY tree_size, id LIMIT ?"
        )
        params = (origin, min_tree_size, limit)
        return await self._read(lambda c: [_sql.checkpoint_from_row(r) for r in c.execute(sql, params)])

    async def fetch_latest_checkpoint(self, origin: str) -> StoredCheckpoint | None:
        """Return the newest checkpoint of the origin, or None."""
        sql = f"SELECT {_sql.CHECKPOINT_COLUMNS} FROM checkpoints WHERE origin = ? ORDER BY tree_size DESC, id DESC LIMIT 1"
        rows = await self._read(lambda c: [_sql.checkpoint_from_row(r) for r in c.execute(sql, (origin,))])
        return rows[0] if rows else None

    async def search_entries(self, query: RecordQuery) -> list[LogEntry]:
        """Return records matching ``query``, newest first; see ``sqlite_search.search``."""
        return await self._read(functools.partial(search, query=query))

    async def prune_entries(self, origin: str, tree_size: int) -> int:
        """Delete records below a stored checkpoint's tree size; see ``AuditStore.prune_entries``."""

        def run(conn: sqlite3.Connection) -> int:
            found = conn.execute(
                "SELECT 1 FROM checkpoints WHERE origin = ? AND tree_size = ? LIMIT 1", (origin, tree_size)
            ).fetchone()
            if found is None:
                raise StorageError(f"no checkpoint of {origin!r} at tree size {tree_size}; refusing to prune")
            conn.execute("DELETE FROM search_index WHERE origin = ? AND seq < ?", (origin, tree_size))
            return conn.execute("DELETE FROM records WHERE origin = ? AND seq < ?", (origin, tree_size)).rowcount

        return await self._write(run)

    async def aclose(self) -> None:
        """Let queued writes finish, then stop the writer thread and close every connection."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():  # not started when opened read-only
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join)
        if self._reader_pool is not None:
            await asyncio.to_thread(self._reader_pool.shutdown)
        with self._reader_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()


def _translate(exc: sqlite3.Error, context: str) -> StorageError:
    """Wrap a sqlite3 error at the seam; the thread hands the result to the loop instead of raising it."""
    try:
        raise StorageError(f"{context}: {exc}") from exc
    except StorageError as translated:
        return translated


def _attempt(run: Callable[[sqlite3.Connection], Any], conn: sqlite3.Connection) -> tuple[bool, Any]:
    """Run one job, capturing its result or error so the writer thread never dies of a job."""
    try:
        return True, run(conn)
    except sqlite3.Error as exc:
        return False, _translate(exc, "SQLite error")
    except Exception as exc:  # the caller's coroutine re-raises it; the thread must keep serving
        return False, exc
