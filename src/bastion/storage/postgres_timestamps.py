"""PostgreSQL implementation of ``CheckpointTimestampStore`` (storage/base.py) over ``PostgresStore``'s pool.

Owns the ``checkpoint_timestamps`` SQL; asyncpg errors become StorageError here. Obtaining tokens
is audit/timestamping.py's.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from bastion.audit.entry import StoredTimestamp
from bastion.storage.postgres import _translated

_COLUMNS = "origin, tree_size, tsa, token, gen_time"


class PostgresCheckpointTimestampStore:
    """Tokens in the ``checkpoint_timestamps`` table; get it as ``store.checkpoint_timestamps`` of a ``PostgresStore``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def store_timestamp(self, stamp: StoredTimestamp) -> None:
        """Insert a token; see ``CheckpointTimestampStore.store_timestamp``."""
        sql = f"INSERT INTO checkpoint_timestamps ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
        with _translated(f"cannot store time-stamp of {stamp.origin}/{stamp.tree_size}"):
            await self._pool.execute(sql, stamp.origin, stamp.tree_size, stamp.tsa, stamp.token, stamp.gen_time)

    async def fetch_timestamps(self, origin: str, min_tree_size: int = 0, limit: int = 1000) -> list[StoredTimestamp]:
        """Return tokens with ``tree_size >= min_tree_size``, by tree size then TSA."""
        sql = (
            f"SELECT {_COLUMNS} FROM checkpoint_timestamps WHERE origin = $1 AND tree_size >= $2"
            " ORDER BY tree_size, tsa LIMIT $3"
        )
        with _translated("cannot read time-stamps"):
            rows = await self._pool.fetch(sql, origin, min_tree_size, limit)
        return [_stamp_from_row(r) for r in rows]

    async def fetch_latest_timestamp(self, origin: str, tsa: str) -> StoredTimestamp | None:
        """Return the token of the largest tree size ``tsa`` stamped, or None."""
        sql = (
            f"SELECT {_COLUMNS} FROM checkpoint_timestamps WHERE origin = $1 AND tsa = $2"
            " ORDER BY tree_size DESC LIMIT 1"
        )
        with _translated("cannot read time-stamps"):
            row = await self._pool.fetchrow(sql, origin, tsa)
        return None if row is None else _stamp_from_row(row)


def _stamp_from_row(row: Any) -> StoredTimestamp:
    return StoredTimestamp(row[0], row[1], row[2], bytes(row[3]), row[4])
