"""PostgreSQL implementation of ``ApiKeyStore`` (identity/apikey.py) over ``PostgresStore``'s pool.

Owns the ``api_keys`` SQL and how a record maps to a row (groups as ``TEXT[]``); asyncpg errors
become StorageError here. Creating keys and checking them stays in the identity package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from bastion.errors import StorageError
from bastion.identity.apikey import ApiKeyRecord
from bastion.storage.postgres import _translated

_COLUMNS = "key_id, secret_sha256, subject, group_names, created_at, expires_at, revoked_at, last_used_at"


class PostgresApiKeyStore:
    """API key records in the ``api_keys`` table; get it as ``store.api_keys`` of a ``PostgresStore``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def store_api_key(self, record: ApiKeyRecord) -> None:
        """Insert a new record.

        Raises:
            StorageError: a key with this ``key_id`` exists, or the write failed.
        """
        sql = f"INSERT INTO api_keys ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        with _translated(f"cannot store API key {record.key_id}"):
            await self._pool.execute(
                sql, record.key_id, record.secret_sha256, record.subject, sorted(record.groups),
                record.created_at, record.expires_at, record.revoked_at, record.last_used_at,
            )

    async def fetch_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The record for ``key_id``, or None."""
        with _translated("cannot read API key"):
            row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = $1", key_id)
        return None if row is None else _record_from_row(row)

    async def list_api_keys(self) -> Sequence[ApiKeyRecord]:
        """All records, revoked and expired ones included, oldest first."""
        with _translated("cannot list API keys"):
            rows = await self._pool.fetch(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, key_id")
        return [_record_from_row(r) for r in rows]

    async def revoke_api_key(self, key_id: str, revoked_at: float) -> bool:
        """Mark the key revoked, keeping an earlier revocation time; False if it does not exist."""
        # LEAST ignores NULL, so a first revocation takes revoked_at and a later one keeps the earlier.
        sql = "UPDATE api_keys SET revoked_at = LEAST(revoked_at, $1) WHERE key_id = $2"
        with _translated("cannot revoke API key"):
            status: str = await self._pool.execute(sql, revoked_at, key_id)
        return status != "UPDATE 0"

    async def touch_api_key(self, key_id: str, last_used_at: float) -> None:
        """Record a use; a late write never moves ``last_used_at`` back. An unknown key is ignored."""
        sql = "UPDATE api_keys SET last_used_at = GREATEST(last_used_at, $1) WHERE key_id = $2"
        with _translated("cannot record API key use"):
            await self._pool.execute(sql, last_used_at, key_id)


def _record_from_row(row: Any) -> ApiKeyRecord:
    groups = row[3]
    if not isinstance(groups, list):
        raise StorageError(f"API key {row[0]}: stored groups are not a list of names")
    return ApiKeyRecord(
        key_id=row[0], secret_sha256=bytes(row[1]), subject=row[2], groups=frozenset(groups),
        created_at=row[4], expires_at=row[5], revoked_at=row[6], last_used_at=row[7],
    )
