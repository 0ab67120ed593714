"""SQLite implementation of ``CheckpointTimestampStore`` (storage/base.py), sharing ``SqliteStore``'s threads.

Owns the ``checkpoint_timestamps`` SQL. Writes go through the store's single writer thread, reads
through its reader pool; the store translates sqlite3 errors. Obtaining tokens is audit/timestamping.py's.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from bastion.audit.entry import StoredTimestamp
from bastion.errors import StorageError

if TYPE_CHECKING:
    from bastion.storage.sqlite import SqliteStore

_COLUMNS = "origin, tree_size, tsa, token, gen_time"


class SqliteCheckpointTimestampStore:
    """Tokens in the ``checkpoint_timestamps`` table of one ``SqliteStore``; get it as ``store.checkpoint_timestamps``."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def store_timestamp(self, stamp: StoredTimestamp) -> None:
        """Insert a token; see ``CheckpointTimestampStore.store_timestamp``."""
        row = (stamp.origin, stamp.tree_size, stamp.tsa, stamp.token, stamp.gen_time)

        def run(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(f"INSERT INTO checkpoint_timestamps ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)", row)
            except sqlite3.IntegrityError as exc:
                raise StorageError(f"cannot store time-stamp of {stamp.origin}/{stamp.tree_size}: {exc}") from exc

        await self._store._write(run)

    async def fetch_timestamps(self, origin: str, min_tree_size: int = 0, limit: int = 1000) -> list[StoredTimestamp]:
        """Return tokens with ``tree_size >= min_tree_size``, by tree size then TSA."""
        sql = (
            f"SELECT {_COLUMNS} FROM checkpoint_timestamps WHERE origin = ? AND tree_size >= ?"
            " ORDER BY tree_size, tsa LIMIT ?"
        )
        params = (origin, min_tree_size, limit)
        return await self._store._read(lambda c: [_stamp_from_row(r) for r in c.execute(sql, params)])

    async def fetch_latest_timestamp(self, origin: str, tsa: str) -> StoredTimestamp | None:
        """Return the token of the largest tree size ``tsa`` stamped, or None."""
        sql = (
            f"SELECT {_COLUMNS} FROM checkpoint_timestamps WHERE origin = ? AND tsa = ?"
            " ORDER BY tree_size DESC LIMIT 1"
        )
        rows = await self._store._read(lambda c: [_stamp_from_row(r) for r in c.execute(sql, (origin, tsa))])
        return rows[0] if rows else None


def _stamp_from_row(row: Any) -> StoredTimestamp:
    return StoredTimestamp(row[0], row[1], row[2], bytes(row[3]), row[4])
