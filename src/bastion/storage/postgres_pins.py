"""PostgreSQL implementation of ``ToolPinStore`` (storage/pins.py) over ``PostgresStore``'s pool.

Owns the ``tool_pins`` / ``tool_pin_changes`` SQL; an approval takes the pending row with
``DELETE ... RETURNING`` and pins it in the same transaction, so two operators cannot both approve
it. asyncpg errors become StorageError here; hashing and diffing stay in ``policy/pins.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncpg

from bastion.policy.pins import PendingChange, ToolPin
from bastion.storage.pins import (
    PENDING_COLUMNS,
    PIN_COLUMNS,
    PinRecord,
    pending_from_row,
    pending_row,
    pin_record_from_row,
    pin_row,
)
from bastion.storage.postgres import _translated

_UPSERT_PIN = (
    f"INSERT INTO tool_pins ({PIN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (server, name) DO UPDATE SET"
    " sha256 = excluded.sha256, definition = excluded.definition, pinned_at = excluded.pinned_at,"
    " approved_by = excluded.approved_by"
)
_UPSERT_PENDING = (
    f"INSERT INTO tool_pin_changes ({PENDING_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
    " ON CONFLICT (server, name) DO UPDATE SET old_sha256 = excluded.old_sha256,"
    " old_definition = excluded.old_definition, new_sha256 = excluded.new_sha256,"
    " new_definition = excluded.new_definition, diff = excluded.diff"
)


class PostgresToolPinStore:
    """Tool pins and pending changes; get it as ``store.tool_pins`` of a ``PostgresStore``."""

    def __init__(self, pool: asyncpg.Pool, *, clock: Callable[[], float] = time.time) -> None:
        self._pool = pool
        self._clock = clock

    async def fetch_pins(self, server: str) -> Mapping[str, ToolPin]:
        """Every pin of ``server``, by tool name."""
        return {record.pin.name: record.pin for record in await self.list_pins(server)}

    async def store_pin(self, pin: ToolPin) -> None:
        """Create or replace the pin of ``(pin.server, pin.name)`` as pinned by the gateway (no approver)."""
        row = pin_row(pin, self._clock(), None)
        with _translated("cannot store tool pin"):
            await self._pool.execute(_UPSERT_PIN, *row)

    async def fetch_pending(self, server: str) -> Mapping[str, PendingChange]:
        """Every change of ``server`` waiting for review, by tool name."""
        return {change.new.name: change for change in await self.list_pending(server)}

    async def store_pending(self, change: PendingChange) -> None:
        """Create or replace the pending change of ``(server, name)`` of ``change.new``."""
        row = pending_row(change)
        with _translated("cannot store pending tool change"):
            await self._pool.execute(_UPSERT_PENDING, *row)

    async def delete_pending(self, server: str, name: str) -> None:
        """Forget a pending change; absent is not an error."""
        with _translated("cannot delete pending tool change"):
            await self._pool.execute("DELETE FROM tool_pin_changes WHERE server = $1 AND name = $2", server, name)

    async def list_pins(self, server: str | None = None) -> Sequence[PinRecord]:
        """Every pin (of ``server`` if given), ordered by server then tool name."""
        where, params = _server_filter(server)
        with _translated("cannot read tool pins"):
            rows = await self._pool.fetch(f"SELECT {PIN_COLUMNS} FROM tool_pins{where} ORDER BY server, name", *params)
        return [pin_record_from_row(r) for r in rows]

    async def list_pending(self, server: str | None = None) -> Sequence[PendingChange]:
        """Every pending change (of ``server`` if given), ordered by server then tool name."""
        where, params = _server_filter(server)
        sql = f"SELECT {PENDING_COLUMNS} FROM tool_pin_changes{where} ORDER BY server, name"
        with _translated("cannot read pending tool changes"):
            rows = await self._pool.fetch(sql, *params)
        return [pending_from_row(r) for r in rows]

    async def approve_pending(
        self, server: str, name: str, sha256: str, *, approved_by: str, approved_at: float
    ) -> PinRecord | None:
        """Pin the pending definition hashing to ``sha256`` and drop the change; see ``ToolPinStore``."""
        take = (
            "DELETE FROM tool_pin_changes WHERE server = $1 AND name = $2 AND new_sha256 = $3"
            f" RETURNING {PENDING_COLUMNS}"
        )
        with _translated("cannot approve tool change"):
            async with self._pool.acquire() as conn, conn.transaction():
                taken = await conn.fetchrow(take, server, name, sha256)
                if taken is None:
                    return None
                pin = pending_from_row(taken).new
                await conn.execute(_UPSERT_PIN, *pin_row(pin, approved_at, approved_by))
        return PinRecord(pin, approved_at, approved_by)


def _server_filter(server: str | None) -> tuple[str, tuple[Any, ...]]:
    return ("", ()) if server is None else (" WHERE server = $1", (server,))
