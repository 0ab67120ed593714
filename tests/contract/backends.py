"""The store backends every contract suite runs on, provisioned fresh for each test.

SQLite as a file and in memory; PostgreSQL (the real server at 127.0.0.1:5432) in a schema of
its own, dropped afterwards, so runs never see each other's rows.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from bastion.storage import Store, open_store

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)
ALL_BACKENDS = ["sqlite-file", "sqlite-memory", POSTGRES]
PERSISTENT_BACKENDS = ["sqlite-file", POSTGRES]


@contextlib.asynccontextmanager
async def pg_schema(prefix: str = "t") -> AsyncIterator[str]:
    """A store URL in a fresh PostgreSQL schema, dropped on exit."""
    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    try:
        yield f"{PG_DSN}?schema={schema}"
    finally:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def provision(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """Yield a store URL of ``kind`` ("sqlite-file", "sqlite-memory" or "postgres")."""
    if kind == "sqlite-file":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    elif kind == "sqlite-memory":
        yield "sqlite:///:memory:"
    else:
        async with pg_schema() as url:
            yield url


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[Store]:
    """An open store, closed on exit."""
    store = await open_store(url)
    try:
        yield store
    finally:
        await store.aclose()
