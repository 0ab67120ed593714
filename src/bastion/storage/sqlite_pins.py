"""SQLite implementation of ``ToolPinStore`` (storage/pins.py), sharing ``SqliteStore``'s threads.

Owns the ``tool_pins`` / ``tool_pin_changes`` SQL. Writes go through the store's single writer
thread, so an approval (read pending, pin it, drop it) is one transaction; reads use its reader
pool. What counts as a change, and the diff text, come from ``policy/pins.py``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from bastion.storage.sqlite import SqliteStore

_UPSERT_PIN = (
    f"INSERT INTO tool_pins ({PIN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (server, name) DO UPDATE SET"
    " sha256 = excluded.sha256, definition = excluded.definition, pinned_at = excluded.pinned_at,"
    " approved_by = excluded.approved_by"
)
_UPSERT_PENDING = (
    f"INSERT INTO tool_pin_changes ({PENDING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (server, name)"
    " DO UPDATE SET old_sha256 = excluded.old_sha256, old_definition = excluded.old_definition,"
    " new_sha256 = excluded.new_sha256, new_definition = excluded.new_definition, diff = excluded.diff"
)


class SqliteToolPinStore:
    """Tool pins and pending changes in one ``SqliteStore``; get it as ``store.tool_pins``."""

    def __init__(self, store: SqliteStore, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def fetch_pins(self, server: str) -> Mapping[str, ToolPin]:
        """Every pin of ``server``, by tool name."""
        return {record.pin.name: record.pin for record in await self.list_pins(server)}

    async def store_pin(self, pin: ToolPin) -> None:
        """Create or replace the pin of ``(pin.server, pin.name)`` as pinned by the gateway (no approver)."""
        row = pin_row(pin, self._clock(), None)
        await self._store._write(lambda c: c.execute(_UPSERT_PIN, row).rowcount)

    async def fetch_pending(self, server: str) -> Mapping[str, PendingChange]:
        """Every change of ``server`` waiting for review, by tool name."""
        return {change.new.name: change for change in await self.list_pending(server)}

    async def store_pending(self, change: PendingChange) -> None:
        """Create or replace the pending change of ``(server, name)`` of ``change.new``."""
        row = pending_row(change)
        await self._store._write(lambda c: c.execute(_UPSERT_PENDING, row).rowcount)

    async def delete_pending(self, server: str, name: str) -> None:
        """Forget a pending change; absent is not an error."""
        sql = "DELETE FROM tool_pin_changes WHERE server = ? AND name = ?"
        await self._store._write(lambda c: c.execute(sql, (server, name)).rowcount)

    async def list_pins(self, server: str | None = None) -> Sequence[PinRecord]:
        """Every pin (of ``server`` if given), ordered by server then tool name."""
        where, params = _server_filter(server)
        sql = f"SELECT {PIN_COLUMNS} FROM tool_pins{where} ORDER BY server, name"
        rows = await self._store._read(lambda c: c.execute(sql, params).fetchall())
        return [pin_record_from_row(r) for r in rows]

    async def list_pending(self, server: str | None = None) -> Sequence[PendingChange]:
        """Every pending change (of ``server`` if given), ordered by server then tool name."""
        where, params = _server_filter(server)
        sql = f"SELECT {PENDING_COLUMNS} FROM tool_pin_changes{where} ORDER BY server, name"
        rows = await self._store._read(lambda c: c.execute(sql, params).fetchall())
        return [pending_from_row(r) for r in rows]

    async def approve_pending(
        self, server: str, name: str, sha256: str, *, approved_by: str, approved_at: float
    ) -> PinRecord | None:
        """Pin the pending definition hashing to ``sha256`` and drop the change; see ``ToolPinStore``."""
        take = (
            f"DELETE FROM tool_pin_changes WHERE server = ? AND name = ? AND new_sha256 = ? RETURNING {PENDING_COLUMNS}"
        )

        def run(conn: sqlite3.Connection) -> PinRecord | None:
            taken = conn.execute(take, (server, name, sha256)).fetchall()
            if not taken:
                return None
            pin = pending_from_row(taken[0]).new
            conn.execute(_UPSERT_PIN, pin_row(pin, approved_at, approved_by))
            return PinRecord(pin, approved_at, approved_by)

        return await self._store._write(run)


def _server_filter(server: str | None) -> tuple[str, tuple[str, ...]]:
    return ("", ()) if server is None else (" WHERE server = ?", (server,))
