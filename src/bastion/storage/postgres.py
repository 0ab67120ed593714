"""PostgreSQL implementation of ``AuditStore`` over an asyncpg pool, one transaction per batch.

Owns connection pooling, the optional schema (``search_path``) a store lives in, running the
postgres migrations under an advisory lock (or, opened without creating, checking that none is
pending), and translating asyncpg errors into StorageError. Durability is PostgreSQL's own
(``synchronous_commit`` must stay on; it is checked at open). Opened ``READ_ONLY``, every
transaction is read-only (``default_transaction_read_only``), so read-only credentials suffice.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import asyncpg

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
from bastion.storage.migrate import SCHEMA_MIGRATIONS_SQL, pending_migrations, require_migrated

if TYPE_CHECKING:
    from bastion.storage.postgres_approvals import PostgresApprovalStore
    from bastion.storage.postgres_keys import PostgresApiKeyStore
    from bastion.storage.postgres_pins import PostgresToolPinStore
    from bastion.storage.postgres_timestamps import PostgresCheckpointTimestampStore

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_LOCK = 0x6261_7374  # "bast": serialises migrations of concurrent gateway starts
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10


@contextlib.contextmanager
def _translated(context: str) -> Iterator[None]:
    """Turn asyncpg / socket errors into StorageError at the seam."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise StorageError(f"{context}: {type(exc).__name__}: {exc}") from exc


def _settle(futures: list[asyncio.Future[None]], failure: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if failure is None:
            future.set_result(None)
        else:
            future.set_exception(failure)


def _attached(conn: asyncpg.pool.PoolConnectionProxy) -> bool:
    """Whether a kept pool connection is still open and still ours."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:  # "connection has been released back to the pool"
        return False


class PostgresStore:
    """``AuditStore`` over PostgreSQL; create with ``await PostgresStore.open(dsn, schema=...)``."""

    def __init__(self, pool: asyncpg.Pool, *, read_only: bool = False) -> None:
        self._pool = pool
        self._read_only = read_only
        self._queued: list[tuple[_sql.AppendRows, asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._appender: asyncpg.pool.PoolConnectionProxy | None = None
        """A pool connection kept for appends: a release would cost a reset round trip per batch."""
        self._closed = False

    @classmethod
    async def open(
        cls, dsn: str, *, schema: str | None = None, max_size: int = POOL_MAX_SIZE, mode: OpenMode = OpenMode.CREATE
    ) -> PostgresStore:
        """Connect; create ``schema`` if given and apply pending migrations, or, by ``mode``, check that neither is needed.

        Raises:
            UnpreparedStoreError: without ``OpenMode.CREATE``: ``schema`` does not exist, or holds no
                Bastion schema or an older one.
            StorageError: the server is unreachable, the schema name is invalid, a migration fails
                or ``synchronous_commit`` is off (commits would not be durable).
        """
        settings: dict[str, str] = {}
        if schema is not None:
            if not _SCHEMA_NAME.match(schema):
                raise StorageError(f"invalid schema name {schema!r}")
            settings["search_path"] = schema
        if mode is OpenMode.READ_ONLY:
            settings["default_transaction_read_only"] = "on"
        with _translated("cannot connect to PostgreSQL"):
            if schema is not None and mode is OpenMode.CREATE:
                conn = await asyncpg.connect(dsn)
                try:
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                finally:
                    await conn.close()
            pool = await asyncpg.create_pool(dsn, min_size=POOL_MIN_SIZE, max_size=max_size, server_settings=settings)
        store = cls(pool, read_only=mode is OpenMode.READ_ONLY)
        try:
            if mode is OpenMode.CREATE:
                await store._prepare()
            else:
                await store._check_migrated(schema)
        except BaseException:
            await pool.close()
            raise
        return store

    async def _check_migrated(self, schema: str | None) -> None:
        where = f"PostgreSQL schema {schema!r}" if schema is not None else "the PostgreSQL search_path"
        with _translated("cannot read the PostgreSQL schema"):
            async with self._pool.acquire() as conn:
                if schema is not None and await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema) is None:
                    raise UnpreparedStoreError(f"{where} does not exist; check the store URL")
                applied = None
                if await conn.fetchval("SELECT to_regclass('schema_migrations')") is not None:
                    applied = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                require_migrated("postgres", applied, where)
                if not self._read_only and await conn.fetchval("SHOW synchronous_commit") == "off":
                    raise StorageError("synchronous_commit is off; audit commits would not be durable")

    async def _prepare(self) -> None:
        with _translated("PostgreSQL migration failed"):
            async with self._pool.acquire() as conn:
                if await conn.fetchval("SHOW synchronous_commit") == "off":
                    raise StorageError("synchronous_commit is off; audit commits would not be durable")
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                    await conn.execute(SCHEMA_MIGRATIONS_SQL)
                    applied = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                    for migration in pending_migrations("postgres", applied):
                        await conn.execute(migration.sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations VALUES ($1, $2, $3)",
                            migration.version,
                            migration.name,
                            datetime.now(UTC).isoformat(),
                        )

    @cached_property
    def api_keys(self) -> PostgresApiKeyStore:
        """The ``ApiKeyStore`` of this database, on this store's pool."""
        from bastion.storage.postgres_keys import PostgresApiKeyStore  # imports _translated from here

        return PostgresApiKeyStore(self._pool)

    @cached_property
    def tool_pins(self) -> PostgresToolPinStore:
        """The ``ToolPinStore`` (a ``PinStore``) of this database, on this store's pool."""
        from bastion.storage.postgres_pins import PostgresToolPinStore  # imports _translated from here

        return PostgresToolPinStore(self._pool)

    @cached_property
    def approvals(self) -> PostgresApprovalStore:
        """The ``ApprovalStore`` of this database; its listener holds one pool connection while listening."""
        from bastion.storage.postgres_approvals import PostgresApprovalStore  # imports _translated from here

        return PostgresApprovalStore(self._pool)

    @cached_property
    def checkpoint_timestamps(self) -> PostgresCheckpointTimestampStore:
        """The ``CheckpointTimestampStore`` of this database, on this store's pool."""
        from bastion.storage.postgres_timestamps import PostgresCheckpointTimestampStore  # imports _translated

        return PostgresCheckpointTimestampStore(self._pool)

    async def _fetch(self, context: str, sql: str, *params: Any) -> list[asyncpg.Record]:
        with _translated(context):
            async with self._pool.acquire() as conn:
                return list(await conn.fetch(sql, *params))

    def append_batch(self, batch: AppendBatch) -> asyncio.Future[None]:
        """Queue records, checkpoints and head for one transaction; see ``AuditStore.append_batch``."""
        if self._closed:
            raise StorageError("PostgreSQL store is closed")
        if self._read_only:
            raise StorageError("PostgreSQL store is opened read-only")
        rows = _sql.AppendRows.of(batch)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((rows, future))
        if self._committer is None or self._committer.done():  # done: cancelled before its first step
            self._committer = asyncio.create_task(self._commit_queued(), name="bastion-postgres-appends")
        return future

    async def _commit_queued(self) -> None:
        """Commit what is queued, one statement per run of batches that continue one another, until none is left."""
        queued: list[tuple[_sql.AppendRows, asyncio.Future[None]]] = []
        try:
            while self._queued:
                queued, self._queued = self._queued, []
                for rows, futures in _sql.merge_queued(queued):
                    try:
                        with _translated("PostgreSQL append failed"):
                            await self._append_rows(rows)
                    except Exception as exc:
                        _settle(futures, exc)
                    else:
                        _settle(futures, None)
        finally:
            self._committer = None
            # Reached with futures unsettled only when this task is cancelled: nothing may wait forever.
            stopped = StorageError("PostgreSQL appends stopped before this batch was committed")
            _settle([future for _, future in queued + self._queued], stopped)
            self._queued = []

    async def _append_rows(self, rows: _sql.AppendRows) -> None:
        if self._appender is not None and not _attached(self._appender):
            self._appender = None  # the server closed it; asyncpg already gave it back to the pool
        if self._appender is None:
            self._appender = await self._pool.acquire()
        conn = self._appender
        try:
            # Moving the head takes its row lock, which serialises writers of one origin; a second
            # gateway writing the same origin then moves no head and inserts nothing (READ
            # COMMITTED re-checks the tree size after the lock wait). One statement, autocommit.
            first = rows.previous_size == 0
            if len(rows.records) == 1 and not rows.checkpoints:
                moved = await conn.execute(_sql.append_one_record_sql(first=first), *rows.head_row(), *rows.records[0]) == "INSERT 0 1"
            else:
                arrays = [list(c) for c in zip(*rows.records, strict=True)] or [[] for _ in range(_sql.RECORD_WIDTH)]
                arrays += [list(c) for c in zip(*rows.checkpoints, strict=True)] or [[] for _ in range(_sql.CHECKPOINT_WIDTH)]
                moved = await conn.fetchval(_sql.append_batch_arrays_sql(first=first), *rows.head_row(), *arrays) == 1
            if not moved:
                raise rows.conflict(await conn.fetchval("SELECT tree_size FROM log_heads WHERE origin = $1", rows.origin))
        except BaseException as exc:
            if not isinstance(exc, StorageError):  # the connection may be broken: let the pool judge it
                self._appender = None
                await self._pool.release(conn)
            raise

    async def fetch_origins(self) -> list[str]:
        """Every origin with a head, a record or a checkpoint, sorted; see ``AuditStore.fetch_origins``."""
        return [row[0] for row in await self._fetch("cannot list origins", _sql.ORIGINS_SQL)]

    async def fetch_head(self, origin: str) -> LogHead | None:
        """Return the origin's stored head, or None."""
        rows = await self._fetch("cannot read head", "SELECT tree_size, frontier FROM log_heads WHERE origin = $1", origin)
        return LogHead(origin, rows[0][0], unpack_frontier(bytes(rows[0][1]))) if rows else None

    async def fetch_entry(self, origin: str, seq: int) -> LogEntry | None:
        """Return one record or None."""
        rows = await self.fetch_entries(origin, seq, seq + 1)
        return rows[0] if rows else None

    async def fetch_entries(self, origin: str, start_seq: int, end_seq: int) -> list[LogEntry]:
        """Return records with ``start_seq <= seq < end_seq`` in seq order."""
        sql = f"SELECT {_sql.ENTRY_COLUMNS} FROM records WHERE origin = $1 AND seq >= $2 AND seq < $3 ORDER BY seq"
        return [_sql.entry_from_row(r) for r in await self._fetch("cannot read records", sql, origin, start_seq, end_seq)]

    def stream_entries(self, origin: str, start_seq: int = 0, batch_size: int = 1000) -> AsyncIterator[LogEntry]:
        """Yield records from ``start_seq`` on in seq order, ``batch_size`` per read."""
        sql = f"SELECT {_sql.ENTRY_COLUMNS} FROM records WHERE origin = $1 AND seq >= $2 ORDER BY seq LIMIT $3"

        async def fetch_page(from_seq: int, limit: int) -> list[LogEntry]:
            return [_sql.entry_from_row(r) for r in await self._fetch("cannot read records", sql, origin, from_seq, limit)]

        return iterate_pages(fetch_page, start_seq, batch_size)

    async def stream_indexed_entries(self, origin: str, batch_size: int = 1000) -> AsyncIterator[list[VerifiedRow]]:
        """Yield pages of records with their search columns; see ``AuditStore.stream_indexed_entries``.

        Searches read the records themselves, so there is no other index row and none is stray.
        """
        if batch_size < 1:
            raise StorageError("batch_size must be positive")
        sql = f"SELECT {_sql.RECORD_COLUMNS} FROM records WHERE origin = $1 AND seq >= $2 ORDER BY seq LIMIT $3"
        next_seq = LOWEST_SEQ
        while True:
            rows = await self._fetch("cannot read records", sql, origin, next_seq, batch_size)
            yield [_sql.indexed_entry_from_row(row) for row in rows]
            if len(rows) < batch_size:
                return
            next_seq = rows[-1][1] + 1

    async def fetch_checkpoints(self, origin: str, min_tree_size: int = 0, limit: int = 1000) -> list[StoredCheckpoint]:
        """Return checkpoints with ``tree_size >= min_tree_size``, oldest first."""
        sql = (
            f"SELECT {_sql.CHECKPOINT_COLUMNS} FROM checkpoints WHERE origin = $1 AND tree_size >= $2"
            " ORDER BY tree_size, id LIMIT $3"
        )
        rows = await self._fetch("cannot read checkpoints", sql, origin, min_tree_size, limit)
        return [_sql.checkpoint_from_row(r) for r in rows]

    async def fetch_latest_checkpoint(self, origin: str) -> StoredCheckpoint | None:
        """Return the newest checkpoint of the origin, or None."""
        sql = f"SELECT {_sql.CHECKPOINT_COLUMNS} FROM checkpoints WHERE origin = $1 ORDER BY tree_size DESC, id DESC LIMIT 1"
        rows = await self._fetch("cannot read checkpoints", sql, origin)
        return _sql.checkpoint_from_row(rows[0]) if rows else None

    async def search_entries(self, query: RecordQuery) -> list[LogEntry]:
        """Return records matching ``query``, newest first."""
        sql, params = _sql.search_sql(query, _sql.dollar)
        return [_sql.entry_from_row(r) for r in await self._fetch("cannot search records", sql, *params)]

    async def prune_entries(self, origin: str, tree_size: int) -> int:
        """Delete records below a stored checkpoint's tree size; see ``AuditStore.prune_entries``."""
        with _translated("PostgreSQL prune failed"):
            async with self._pool.acquire() as conn, conn.transaction():
                found = await conn.fetchval(
                    "SELECT 1 FROM checkpoints WHERE origin = $1 AND tree_size = $2 LIMIT 1", origin, tree_size
                )
                if found is None:
                    raise StorageError(f"no checkpoint of {origin!r} at tree size {tree_size}; refusing to prune")
                status = await conn.execute("DELETE FROM records WHERE origin = $1 AND seq < $2", origin, tree_size)
        return int(status.rsplit(" ", 1)[-1])

    async def aclose(self) -> None:
        """Close the pool, waiting for connections in use to be released."""
        self._closed = True
        if self._committer is not None:
            await asyncio.wait([self._committer])  # what is queued is committed first
        with _translated("cannot close PostgreSQL pool"):
            if self._appender is not None:
                await self._pool.release(self._appender)
                self._appender = None
            await self._pool.close()
