"""PostgreSQL ``ApprovalStore``: approval rows on the asyncpg pool plus LISTEN/NOTIFY between instances.

Every change is followed by ``NOTIFY bastion_approvals, '<id>'``; ``start_listening`` holds one
pool connection with ``LISTEN bastion_approvals`` and hands ids to the service. A lost listener
connection is logged; waiters then fall back to their periodic re-read (``recheck_s``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import asyncpg

from bastion.approval.model import Approval, ApprovalState, CallKey, Grant
from bastion.approval.store import ChangeListener
from bastion.storage import _approval_sql as q
from bastion.storage._sql import dollar
from bastion.storage.postgres import _translated

log = logging.getLogger(__name__)

CHANNEL = "bastion_approvals"
"""The NOTIFY channel; the payload is the approval id (ids are unique across schemas)."""


class PostgresApprovalStore:
    """Approvals in the gateway's PostgreSQL database; get it as ``PostgresStore.approvals``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._listen_conn: Any = None
        self._listener: ChangeListener | None = None

    async def _rows(self, context: str, sql: str, *params: Any) -> list[asyncpg.Record]:
        with _translated(context):
            async with self._pool.acquire() as conn:
                return list(await conn.fetch(sql, *params))

    async def insert_approval(self, approval: Approval) -> None:
        """Store a new approval. Raises: StorageError."""
        with _translated("cannot store approval"):
            async with self._pool.acquire() as conn:
                await conn.execute(q.insert_approval_sql(dollar), *q.approval_row(approval))

    async def fetch_approval(self, approval_id: str) -> Approval | None:
        """Return the approval or None."""
        sql = f"SELECT {q.APPROVAL_COLUMNS} FROM approvals WHERE id = $1"
        rows = await self._rows("cannot read approval", sql, approval_id)
        return q.approval_from_row(tuple(rows[0])) if rows else None

    async def list_approvals(self, state: ApprovalState | None = None, limit: int = 100) -> Sequence[Approval]:
        """Return approvals (of ``state``), newest first."""
        if state is None:
            sql = f"SELECT {q.APPROVAL_COLUMNS} FROM approvals ORDER BY created_at DESC, id LIMIT $1"
            rows = await self._rows("cannot list approvals", sql, limit)
        else:
            sql = f"SELECT {q.APPROVAL_COLUMNS} FROM approvals WHERE state = $1 ORDER BY created_at DESC, id LIMIT $2"
            rows = await self._rows("cannot list approvals", sql, state.value, limit)
        return [q.approval_from_row(tuple(r)) for r in rows]

    async def replace_approval(self, approval: Approval) -> bool:
        """Compare-and-set on version; True when this write won."""
        with _translated("cannot update approval"):
            async with self._pool.acquire() as conn:
                status = await conn.execute(q.replace_approval_sql(dollar), *q.replace_approval_params(approval))
        return bool(status == "UPDATE 1")

    async def find_approval(self, key: CallKey, state: ApprovalState, now: float) -> Approval | None:
        """Return the oldest live approval in ``state`` binding ``key``."""
        rows = await self._rows("cannot find approval", q.find_approval_sql(dollar), *q.find_approval_params(key, state, now))
        return q.approval_from_row(tuple(rows[0])) if rows else None

    async def fetch_abandonable(self, holder: str, run_id: str) -> Sequence[Approval]:
        """Return pending held approvals of ``holder`` from other runs."""
        sql = (f"SELECT {q.APPROVAL_COLUMNS} FROM approvals"
               " WHERE state = 'pending' AND held AND holder = $1 AND run_id <> $2")
        return [q.approval_from_row(tuple(r)) for r in await self._rows("cannot read approvals", sql, holder, run_id)]

    async def fetch_due(self, now: float, limit: int = 100) -> Sequence[Approval]:
        """Return pending approvals past their deadline."""
        sql = f"SELECT {q.APPROVAL_COLUMNS} FROM approvals WHERE state = 'pending' AND expires_at <= $1 LIMIT $2"
        return [q.approval_from_row(tuple(r)) for r in await self._rows("cannot read approvals", sql, now, limit)]

    async def insert_grant(self, grant: Grant) -> None:
        """Store a time-box grant. Raises: StorageError."""
        with _translated("cannot store grant"):
            async with self._pool.acquire() as conn:
                await conn.execute(q.insert_grant_sql(dollar), *q.grant_row(grant))

    async def find_grant(self, key: CallKey, now: float) -> Grant | None:
        """Return a live grant covering ``key``, or None."""
        rows = await self._rows("cannot find grant", q.find_grant_sql(dollar), *q.find_grant_params(key, now))
        return q.grant_from_row(tuple(rows[0])) if rows else None

    async def publish_change(self, approval_id: str) -> None:
        """NOTIFY every instance listening on this database. Raises: StorageError."""
        with _translated("cannot notify approval change"):
            async with self._pool.acquire() as conn:
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, approval_id)

    async def start_listening(self, listener: ChangeListener) -> None:
        """LISTEN on a connection held until ``stop_listening``. Raises: StorageError."""
        if self._listen_conn is not None:
            raise RuntimeError("already listening")
        self._listener = listener
        with _translated("cannot LISTEN for approval changes"):
            conn = await self._pool.acquire()
            try:
                await conn.add_listener(CHANNEL, self._on_notify)
                conn.add_termination_listener(self._on_lost)
            except BaseException:
                await self._pool.release(conn)
                raise
        self._listen_conn = conn

    async def stop_listening(self) -> None:
        """UNLISTEN and give the connection back to the pool."""
        conn, self._listen_conn = self._listen_conn, None
        if conn is None:
            return
        try:
            with _translated("cannot UNLISTEN"):
                conn.remove_termination_listener(self._on_lost)
                await conn.remove_listener(CHANNEL, self._on_notify)
        finally:
            await self._pool.release(conn)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        if self._listener is not None:
            self._listener(str(payload))

    def _on_lost(self, _conn: Any) -> None:
        log.error("approval LISTEN connection lost; held calls fall back to periodic re-reads")
