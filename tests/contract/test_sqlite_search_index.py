"""SQLite files records into its search index after the durable commit (migration 0006).

The commit of an audited call writes the record and the head only; a search must still find
every committed record, whether it is filed yet, was lost from the index in a crash, or was
stored before the migration.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.contract.test_storage import checkpoint_at, checkpoint_batch, make_batch, make_entry

from bastion.audit.compact import Frontier
from bastion.storage import AuditStore, RecordQuery, open_store
from bastion.storage.migrate import SCHEMA_MIGRATIONS_SQL, load_migrations

pytestmark = pytest.mark.anyio

SEARCH_INDEXES = {
    "search_index_time", "search_index_subject_time", "search_index_tool_time", "search_index_session",
    "search_index_rare_outcome_time", "search_index_rare_kind_time",
}


def _query(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return list(conn.execute(sql, params))
    finally:
        conn.close()


def _created_indexes(path: Path, table: str) -> set[str]:
    return {str(row[1]) for row in _query(path, f"PRAGMA index_list({table})") if row[3] == "c"}


def _filed(path: Path) -> list[int]:
    return [int(str(row[0])) for row in _query(path, "SELECT seq FROM search_index WHERE origin = 'o1' ORDER BY seq")]


async def _eventually(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met within 2 s")


async def _append_ten(store: AuditStore) -> Frontier:
    """Seqs 0-9 of origin o1, subjects alternating alice and bob."""
    frontier = Frontier()
    for start in (0, 5):
        entries = [make_entry("o1", seq, subject="alice" if seq % 2 == 0 else "bob") for seq in range(start, start + 5)]
        await store.append_batch(make_batch(frontier, entries))
    return frontier


async def _seqs(store: AuditStore, **filters: str) -> list[int]:
    return [e.seq for e in await store.search_entries(RecordQuery(**filters))]  # type: ignore[arg-type]


async def test_the_durable_commit_touches_no_search_index(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = await open_store(f"sqlite:///{path}")
    try:
        await _append_ten(store)
        await _eventually(lambda: _filed(path) == list(range(10)))
    finally:
        await store.aclose()
    assert _created_indexes(path, "records") == set()
    assert _created_indexes(path, "search_index") == SEARCH_INDEXES


async def test_search_finds_records_missing_from_the_index_and_reopening_files_them(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = await open_store(f"sqlite:///{path}")
    try:
        await _append_ten(store)
        await _eventually(lambda: _filed(path) == list(range(10)))
        _query(path, "DELETE FROM search_index WHERE seq >= 6")  # as a crash loses filing, which is not durable
        assert await _seqs(store) == list(range(9, -1, -1))
        assert await _seqs(store, subject="bob") == [9, 7, 5, 3, 1]
        assert await _seqs(store, subject="bob", origin="o1") == [9, 7, 5, 3, 1]
        assert await _seqs(store, subject="carol") == []
    finally:
        await store.aclose()
    reopened = await open_store(f"sqlite:///{path}")
    try:
        assert _filed(path) == list(range(10))
        assert await _seqs(reopened, subject="alice") == [8, 6, 4, 2, 0]
    finally:
        await reopened.aclose()


async def test_records_that_cannot_be_filed_stay_searchable_and_are_filed_in_order_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "store.db"
    store = await open_store(f"sqlite:///{path}")
    try:
        frontier = Frontier()
        await store.append_batch(make_batch(frontier, [make_entry("o1", 0)]))
        await _eventually(lambda: _filed(path) == [0])
        _query(path, "CREATE TRIGGER refuse BEFORE INSERT ON search_index BEGIN SELECT RAISE(ABORT, 'no room'); END")
        with caplog.at_level(logging.WARNING, "bastion.storage.sqlite"):
            await store.append_batch(make_batch(frontier, [make_entry("o1", 1), make_entry("o1", 2)]))
            await _eventually(lambda: any("cannot file 2 audit records" in r.getMessage() for r in caplog.records))
        assert _filed(path) == [0]
        assert await _seqs(store) == [2, 1, 0]  # the commit stood; only filing failed
        _query(path, "DROP TRIGGER refuse")
        await store.append_batch(make_batch(frontier, [make_entry("o1", 3)]))
        await _eventually(lambda: _filed(path) == [0, 1, 2, 3])
    finally:
        await store.aclose()


async def test_pruning_removes_the_pruned_records_from_the_index(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = await open_store(f"sqlite:///{path}")
    try:
        frontier = Frontier()
        await store.append_batch(make_batch(frontier, [make_entry("o1", seq) for seq in range(5)]))
        await store.append_batch(checkpoint_batch(frontier, checkpoint_at("o1", frontier)))
        await store.append_batch(make_batch(frontier, [make_entry("o1", seq) for seq in range(5, 10)]))
        await _eventually(lambda: _filed(path) == list(range(10)))
        await store.prune_entries("o1", 5)
        assert _filed(path) == list(range(5, 10))
        assert await _seqs(store) == list(range(9, 4, -1))
    finally:
        await store.aclose()


async def test_migration_files_the_records_stored_before_it(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(SCHEMA_MIGRATIONS_SQL)
        for migration in [m for m in load_migrations("sqlite") if m.version <= 5]:
            conn.executescript(migration.sql)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, '2026-11-24')", (migration.version, migration.name))
        frontier = Frontier()
        entries = [make_entry("o1", seq, subject=f"user-{seq}", outcome="denied" if seq == 3 else "ok") for seq in range(5)]
        for entry in entries:
            frontier.append(entry.leaf_hash)
            conn.execute(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, 'search', 's-1', ?)",
                (entry.origin, entry.seq, entry.time, entry.kind, entry.body, entry.leaf_hash, f"user-{entry.seq}",
                 "denied" if entry.seq == 3 else "ok"),
            )
        conn.execute("INSERT INTO log_heads VALUES ('o1', 5, x'')")
    finally:
        conn.close()
    store = await open_store(f"sqlite:///{path}")
    try:
        assert _filed(path) == list(range(5))
        assert await _seqs(store, subject="user-2") == [2]
        assert await _seqs(store, outcome="denied") == [3]
    finally:
        await store.aclose()
    assert _created_indexes(path, "records") == set()
