"""The store backends every contract suite runs on, provisioned fresh for each test.

SQLite as a file and in memory; PostgreSQL (the real server at 127.0.0.1:5432) in a schema of
its own, dropped afterwards, so runs never see each other's rows.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bastion.storage import Store, open_store

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)
ALL_BACKENDS = ["sqlite-file", "sqlite-memory", POSTGRES]
PERSISTENT_BACKENDS = ["sqlite-file", POSTGRES]


def new_schema_name(prefix: str = "t") -> str:
    """A PostgreSQL schema name no other run uses."""
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


async def drop_schema(schema: str) -> None:
    """Drop a test's PostgreSQL schema and everything in it, if it exists."""
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def pg_schema(prefix: str = "t") -> AsyncIterator[str]:
    """A store URL in a fresh PostgreSQL schema, dropped on exit."""
    schema = new_schema_name(prefix)
    try:
        yield f"{PG_DSN}?schema={schema}"
    finally:
        await drop_schema(schema)


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


async def run_sql(url: str, statement: str, *params: object) -> list[tuple[Any, ...]]:
    """Run one statement straight on the database of a persistent store URL (as someone with the
    database would, past the store), committed; ``?`` placeholders on SQLite, ``$n`` on PostgreSQL."""
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as database, database:
            return database.execute(statement, params).fetchall()
    conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": url.rsplit("schema=", 1)[1]})
    try:
        return [tuple(row) for row in await conn.fetch(statement, *params)]
    finally:
        await conn.close()


def explain_sqlite(path: str, sql: str, params: list[object]) -> str:
    """SQLite's query plan for ``sql`` on the file at ``path``, after ANALYZE, as one line."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("ANALYZE")
        return " ".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))


async def explain_postgres(url: str, sql: str, params: list[object]) -> str:
    """PostgreSQL's query plan for ``sql`` in the schema of ``url``, after ANALYZE of its logs, as one line."""
    conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": url.rsplit("schema=", 1)[1]})
    try:
        await conn.execute("ANALYZE records, checkpoints")
        return " ".join(row[0] for row in await conn.fetch(f"EXPLAIN {sql}", *params))
    finally:
        await conn.close()
