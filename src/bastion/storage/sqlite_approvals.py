"""SQLite ``ApprovalStore``: approval rows on the ``SqliteStore`` writer thread, one instance only.

Writes (and so compare-and-set) go through the store's single writer thread; reads go through its
reader connections. There is no cross-process notification: a SQLite gateway is single-instance,
so in-process waiters (approval/service.py) are all there is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bastion.approval.model import Approval, ApprovalState, CallKey, Grant
from bastion.approval.store import ChangeListener
from bastion.storage import _approval_sql as q
from bastion.storage._sql import qmark

if TYPE_CHECKING:
    from bastion.storage.sqlite import SqliteStore


class SqliteApprovalStore:
    """Approvals in the same SQLite database as the audit log; get it as ``SqliteStore.approvals``."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def insert_approval(self, approval: Approval) -> None:
        """Store a new approval. Raises: StorageError."""
        row = q.approval_row(approval)
        await self._store._write(lambda c: c.execute(q.insert_approval_sql(qmark), row) and None)

    async def fetch_approval(self, approval_id: str) -> Approval | None:
        """Return the approval or None."""
        sql = f"SELECT {q.APPROVAL_COLUMNS} FROM approvals WHERE id = ?"
        return await self._store._read(lambda c: _one(c.execute(sql, (approval_id,)).fetchone()))

    async def list_approvals(self, state: ApprovalState | None = None, limit: int = 100) -> Sequence[Approval]:
        """Return approvals (of ``state``), newest first."""
        where, params = ("WHERE state = ?", (state.value, limit)) if state else ("", (limit,))
        sql = f"SELECT {q.APPROVAL_COLUMNS} FROM approvals {where} ORDER BY created_at DESC, id LIMIT ?"
        return await self._store._read(lambda c: [q.approval_from_row(r) for r in c.execute(sql, params)])

    async def replace_approval(self, approval: Approval) -> bool:
        """Compare-and-set on version; True when this write won."""
        params = q.replace_approval_params(approval)
        return await self._store._write(lambda c: c.execute(q.replace_approval_sql(qmark), params).rowcount == 1)

    async def find_approval(self, key: CallKey, state: ApprovalState, now: float) -> Approval | None:
        """Return the oldest live approval in ``state`` binding ``key``."""
        sql, params = q.find_approval_sql(qmark), q.find_approval_params(key, state, now)
        return await self._store._read(lambda c: _one(c.execute(sql, params).fetchone()))

    async def fetch_abandonable(self, holder: str, run_id: str) -> Sequence[Approval]:
        """Return pending held approvals of ``holder`` from other runs."""
        sql = (f"SELECT {q.APPROVAL_COLUMNS} FROM approvals"
               " WHERE state = 'pending' AND held = 1 AND holder = ? AND run_id <> ?")
        return await self._store._read(lambda c: [q.approval_from_row(r) for r in c.execute(sql, (holder, run_id))])

    async def fetch_due(self, now: float, limit: int = 100) -> Sequence[Approval]:
        """Return pending approvals past their deadline."""
        sql = f"SELECT {q.APPROVAL_COLUMNS} FROM approvals WHERE state = 'pending' AND expires_at <= ? LIMIT ?"
        return await self._store._read(lambda c: [q.approval_from_row(r) for r in c.execute(sql, (now, limit))])

    async def insert_grant(self, grant: Grant) -> None:
        """Store a time-box grant. Raises: StorageError."""
        row = q.grant_row(grant)
        await self._store._write(lambda c: c.execute(q.insert_grant_sql(qmark), row) and None)

    async def find_grant(self, key: CallKey, now: float) -> Grant | None:
        """Return a live grant covering ``key``, or None."""
        sql, params = q.find_grant_sql(qmark), q.find_grant_params(key, now)

        def run(c: sqlite3.Connection) -> Grant | None:
            row = c.execute(sql, params).fetchone()
            return None if row is None else q.grant_from_row(row)

        return await self._store._read(run)

    async def publish_change(self, approval_id: str) -> None:
        """No other instance to tell: SQLite serves one gateway."""

    async def start_listening(self, listener: ChangeListener) -> None:
        """Nothing to subscribe to; in-process waiters are woken by the service itself."""

    async def stop_listening(self) -> None:
        """Nothing to stop."""


def _one(row: Sequence[object] | None) -> Approval | None:
    return None if row is None else q.approval_from_row(row)
