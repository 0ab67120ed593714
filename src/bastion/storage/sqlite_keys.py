"""SQLite implementation of ``ApiKeyStore`` (identity/apikey.py), sharing ``SqliteStore``'s threads.

Owns the ``api_keys`` SQL and how a record maps to a row (groups as a sorted JSON array). Writes
go through the store's single writer thread, reads through its reader pool; the store translates
sqlite3 errors. Creating keys and checking them stays in the identity package.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from bastion.errors import StorageError
from bastion.identity.apikey import ApiKeyRecord

if TYPE_CHECKING:
    from bastion.storage.sqlite import SqliteStore

_COLUMNS = "key_id, secret_sha256, subject, group_names, created_at, expires_at, revoked_at, last_used_at"


class SqliteApiKeyStore:
    """API key records in the ``api_keys`` table of one ``SqliteStore``; get it as ``store.api_keys``."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def store_api_key(self, record: ApiKeyRecord) -> None:
        """Insert a new record.

        Raises:
            StorageError: a key with this ``key_id`` exists, or the write failed.
        """
        row = (
            record.key_id, record.secret_sha256, record.subject, orjson.dumps(sorted(record.groups)).decode(),
            record.created_at, record.expires_at, record.revoked_at, record.last_used_at,
        )

        def run(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            except sqlite3.IntegrityError as exc:
                raise StorageError(f"cannot store API key {record.key_id}: {exc}") from exc

        await self._store._write(run)

    async def fetch_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The record for ``key_id``, or None."""
        sql = f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?"
        rows = await self._store._read(lambda c: c.execute(sql, (key_id,)).fetchall())
        return _record_from_row(rows[0]) if rows else None

    async def list_api_keys(self) -> Sequence[ApiKeyRecord]:
        """All records, revoked and expired ones included, oldest first."""
        sql = f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, key_id"
        rows = await self._store._read(lambda c: c.execute(sql).fetchall())
        return [_record_from_row(r) for r in rows]

    async def revoke_api_key(self, key_id: str, revoked_at: float) -> bool:
        """Mark the key revoked, keeping an earlier revocation time; False if it does not exist."""
        sql = (
            "UPDATE api_keys SET revoked_at = CASE WHEN revoked_at IS NULL OR revoked_at > ?1 THEN ?1"
            " ELSE revoked_at END WHERE key_id = ?2"
        )
        changed: int = await self._store._write(lambda c: c.execute(sql, (revoked_at, key_id)).rowcount)
        return changed > 0

    async def touch_api_key(self, key_id: str, last_used_at: float) -> None:
        """Record a use; a late write never moves ``last_used_at`` back. An unknown key is ignored."""
        sql = (
            "UPDATE api_keys SET last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < ?1 THEN ?1"
            " ELSE last_used_at END WHERE key_id = ?2"
        )
        await self._store._write(lambda c: c.execute(sql, (last_used_at, key_id)).rowcount)


def _record_from_row(row: Any) -> ApiKeyRecord:
    try:
        groups = orjson.loads(row[3])
    except orjson.JSONDecodeError as exc:
        raise StorageError(f"API key {row[0]}: stored groups are not JSON") from exc
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise StorageError(f"API key {row[0]}: stored groups are not a list of names")
    return ApiKeyRecord(
        key_id=row[0], secret_sha256=bytes(row[1]), subject=row[2], groups=frozenset(groups),
        created_at=row[4], expires_at=row[5], revoked_at=row[6], last_used_at=row[7],
    )
