"""Opening a store without preparing it (``OpenMode.EXISTING``, ``READ_ONLY``), on SQLite and PostgreSQL.

Only ``CREATE`` may create a database or schema or apply a migration: a reader's mistyped URL is
refused instead of met with a new empty store, and ``READ_ONLY`` works with read-only credentials.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from tests.contract.backends import PG_DSN, POSTGRES, drop_schema, new_schema_name, opened, provision, run_sql
from tests.contract.test_storage import checkpoint_at, checkpoint_batch, make_batch, make_entry

from bastion.audit import reading
from bastion.audit.compact import Frontier
from bastion.audit.keys import KeyRing, SigningKey
from bastion.audit.log import AuditLog, CheckpointPolicy
from bastion.audit.record import AuditEvent, EventKind
from bastion.errors import StorageError
from bastion.storage import OpenMode, RecordQuery, UnpreparedStoreError, open_store
from bastion.storage.migrate import load_migrations

pytestmark = pytest.mark.anyio

WITHOUT_CREATING = [OpenMode.EXISTING, OpenMode.READ_ONLY]


@pytest.fixture(params=["sqlite-file", POSTGRES])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A prepared store holding three records of o1 and a checkpoint over them."""
    async with provision(request.param, tmp_path) as provisioned:
        async with opened(provisioned) as store:
            frontier = Frontier()
            await store.append_batch(make_batch(frontier, [make_entry("o1", 0), make_entry("o1", 1)]))
            await store.append_batch(make_batch(frontier, [make_entry("o1", 2)]))
            await store.append_batch(checkpoint_batch(frontier, checkpoint_at("o1", frontier)))
        yield provisioned


@pytest.mark.parametrize("mode", WITHOUT_CREATING)
async def test_a_missing_sqlite_file_is_refused_and_not_created(tmp_path: Path, mode: OpenMode) -> None:
    path = tmp_path / "typo.db"
    with pytest.raises(UnpreparedStoreError, match="no SQLite database at"):
        await open_store(f"sqlite:///{path}", mode)
    assert not path.exists()


@pytest.mark.parametrize("mode", WITHOUT_CREATING)
async def test_an_in_memory_sqlite_store_is_refused_since_it_is_new_on_every_open(mode: OpenMode) -> None:
    with pytest.raises(UnpreparedStoreError, match="new and empty on every open"):
        await open_store("sqlite:///:memory:", mode)


@pytest.mark.postgres
@pytest.mark.parametrize("mode", WITHOUT_CREATING)
async def test_a_missing_postgres_schema_is_refused_and_not_created(mode: OpenMode) -> None:
    schema = new_schema_name("absent")
    try:
        with pytest.raises(UnpreparedStoreError, match=f"schema '{schema}' does not exist"):
            await open_store(f"{PG_DSN}?schema={schema}", mode)
        conn = await asyncpg.connect(PG_DSN)
        try:
            assert await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema) is None
        finally:
            await conn.close()
    finally:
        await drop_schema(schema)


@pytest.mark.parametrize("mode", WITHOUT_CREATING)
@pytest.mark.parametrize("backend", ["sqlite-file", POSTGRES])
async def test_a_database_without_a_bastion_schema_is_refused(backend: str, tmp_path: Path, mode: OpenMode) -> None:
    async with provision(backend, tmp_path) as url:
        if backend == "sqlite-file":
            await run_sql(url, "CREATE TABLE unrelated (x)")
        else:
            await drop_schema(url.rsplit("schema=", 1)[1])
            conn = await asyncpg.connect(PG_DSN)
            try:
                await conn.execute(f"CREATE SCHEMA {url.rsplit('schema=', 1)[1]}")
            finally:
                await conn.close()
        with pytest.raises(UnpreparedStoreError, match="holds no Bastion store"):
            await open_store(url, mode)


@pytest.mark.parametrize("mode", WITHOUT_CREATING)
async def test_a_store_missing_a_migration_is_refused_and_left_unmigrated(url: str, mode: OpenMode) -> None:
    dialect = "sqlite" if url.startswith("sqlite:") else "postgres"
    latest = load_migrations(dialect)[-1]
    placeholder = "?" if dialect == "sqlite" else "$1"
    await run_sql(url, f"DELETE FROM schema_migrations WHERE version = {placeholder}", latest.version)
    with pytest.raises(UnpreparedStoreError, match=f"missing migrations {latest.version:04d}_{latest.name}"):
        await open_store(url, mode)
    versions = await run_sql(url, "SELECT version FROM schema_migrations")
    assert latest.version not in {row[0] for row in versions}


@pytest.mark.parametrize("mode", WITHOUT_CREATING)
async def test_a_prepared_store_opens_and_reads_what_it_holds(url: str, mode: OpenMode) -> None:
    store = await open_store(url, mode)
    try:
        assert await store.fetch_origins() == ["o1"]
        assert [e.seq async for e in store.stream_entries("o1")] == [0, 1, 2]
        assert [e.seq for e in await store.search_entries(RecordQuery(origin="o1"))] == [2, 1, 0]
        assert (await store.fetch_head("o1")).tree_size == 3  # type: ignore[union-attr]
        assert await store.checkpoint_timestamps.fetch_timestamps("o1") == []
    finally:
        await store.aclose()


async def test_an_existing_store_takes_appends(url: str) -> None:
    store = await open_store(url, OpenMode.EXISTING)
    try:
        frontier = Frontier()
        for seq in range(3):
            frontier.append(make_entry("o1", seq).leaf_hash)
        await store.append_batch(make_batch(frontier, [make_entry("o1", 3)]))
        assert (await store.fetch_entry("o1", 3)) == make_entry("o1", 3)
    finally:
        await store.aclose()


async def test_a_read_only_store_refuses_every_write(url: str) -> None:
    store = await open_store(url, OpenMode.READ_ONLY)
    frontier = Frontier()
    for seq in range(3):
        frontier.append(make_entry("o1", seq).leaf_hash)
    try:
        with pytest.raises(StorageError, match="read-only"):
            await store.append_batch(make_batch(frontier, [make_entry("o1", 3)]))
        with pytest.raises(StorageError, match="read-only"):  # PostgreSQL's own refusal: the DELETE is reached
            await store.prune_entries("o1", 3)
        assert [e.seq async for e in store.stream_entries("o1")] == [0, 1, 2]
    finally:
        await store.aclose()


@pytest.mark.postgres
async def test_read_only_credentials_suffice_to_verify_a_postgres_store(tmp_path: Path) -> None:
    key = SigningKey("gw.test/log", bytes(range(32)))
    role = f"reader_{uuid.uuid4().hex[:12]}"
    async with provision("postgres", tmp_path) as url:
        async with opened(url) as store:
            log = AuditLog(store, origin=key.name, signing_key=key, checkpoints=CheckpointPolicy(4, 3600, 3600))
            await log.start()
            for i in range(6):
                await log.append(AuditEvent(kind=EventKind.REQUEST, subject="alice", name=f"t{i}"))
            await log.aclose()
        schema = url.rsplit("schema=", 1)[1]
        admin = await asyncpg.connect(PG_DSN)
        try:
            await admin.execute(f"CREATE ROLE {role} LOGIN")
            await admin.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
            await admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
            reader_url = url.replace("postgresql://postgres@", f"postgresql://{role}@")
            with pytest.raises(StorageError):  # creating and migrating needs more than SELECT
                await open_store(reader_url)
            store = await open_store(reader_url, OpenMode.READ_ONLY)
            try:
                origins = await store.fetch_origins()
                report = await reading.verify_store(store, origins, KeyRing([key.public()]))
            finally:
                await store.aclose()
            assert (origins, report.ok) == ([key.name], True)
        finally:
            await admin.execute(f"DROP OWNED BY {role}")
            await admin.execute(f"DROP ROLE {role}")
            await admin.close()
