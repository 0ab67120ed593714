"""SQLite files records into its search index after the durable commit (migration 0006).

The commit of an audited call writes the record and the head only; a search must still find
every committed record, whether it is filed yet, was left unfiled by a crash or by another
process, or was stored before the migration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from tests.contract.backends import opened
from tests.contract.test_storage import checkpoint_at, checkpoint_batch, make_batch, make_entry

from bastion.audit.compact import Frontier
from bastion.storage import AuditStore, RecordQuery, SearchCursor, Store, open_store
from bastion.storage.migrate import SCHEMA_MIGRATIONS_SQL, load_migrations
from bastion.storage.sqlite_search import SearchFiler, is_busy, search

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


async def _eventually(condition: Callable[[], bool], within_s: float = 2.0) -> None:
    for _ in range(int(within_s * 100)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {within_s} s")


async def _append_ten(store: AuditStore) -> Frontier:
    """Seqs 0-9 of origin o1, subjects alternating alice and bob."""
    frontier = Frontier()
    for start in (0, 5):
        entries = [make_entry("o1", seq, subject="alice" if seq % 2 == 0 else "bob") for seq in range(start, start + 5)]
        await store.append_batch(make_batch(frontier, entries))
    return frontier


@contextlib.asynccontextmanager
async def _ten_filed(tmp_path: Path) -> AsyncIterator[tuple[Store, Path]]:
    """An open store holding ``_append_ten``'s records, all filed, and its file."""
    path = tmp_path / "store.db"
    async with opened(f"sqlite:///{path}") as store:
        await _append_ten(store)
        await _eventually(lambda: _filed(path) == list(range(10)))
        yield store, path


async def _ten_stored(tmp_path: Path) -> Path:
    """A closed store file holding ``_append_ten``'s records, all filed."""
    async with _ten_filed(tmp_path) as (_, path):
        return path


async def _seqs(store: AuditStore, **filters: str) -> list[int]:
    return [e.seq for e in await store.search_entries(RecordQuery(**filters))]  # type: ignore[arg-type]


async def test_the_durable_commit_touches_no_search_index(tmp_path: Path) -> None:
    path = await _ten_stored(tmp_path)
    assert _created_indexes(path, "records") == set()
    assert _created_indexes(path, "search_index") == SEARCH_INDEXES


async def test_search_finds_records_a_crash_left_unfiled_and_reopening_files_them(tmp_path: Path) -> None:
    async with _ten_filed(tmp_path) as (store, path):
        # What a crash does to filing, which does not wait for the disk: the last filings are gone.
        _query(path, "DELETE FROM search_index WHERE seq >= 6")
        _query(path, "UPDATE search_filed SET through = 5")
        assert await _seqs(store) == list(range(9, -1, -1))
        assert await _seqs(store, subject="bob") == [9, 7, 5, 3, 1]
        assert await _seqs(store, subject="bob", origin="o1") == [9, 7, 5, 3, 1]
        assert await _seqs(store, subject="carol") == []
    async with opened(f"sqlite:///{path}") as reopened:
        await _eventually(lambda: _filed(path) == list(range(10)))
        assert await _seqs(reopened, subject="alice") == [8, 6, 4, 2, 0]


async def test_records_that_cannot_be_filed_stay_searchable_and_are_filed_in_order_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "store.db"
    async with opened(f"sqlite:///{path}") as store:
        frontier = Frontier()
        await store.append_batch(make_batch(frontier, [make_entry("o1", 0)]))
        await _eventually(lambda: _filed(path) == [0])
        _query(path, "CREATE TRIGGER refuse BEFORE INSERT ON search_index BEGIN SELECT RAISE(ABORT, 'no room'); END")
        with caplog.at_level(logging.WARNING, "bastion.storage.sqlite_search"):
            await store.append_batch(make_batch(frontier, [make_entry("o1", 1), make_entry("o1", 2)]))
            await _eventually(lambda: any("cannot file 2 audit records" in r.getMessage() for r in caplog.records))
            assert await _seqs(store) == [2, 1, 0]  # the commit stood; only filing failed
            await asyncio.sleep(0.5)
        assert _filed(path) == [0]
        assert 1 <= len(caplog.records) <= 4  # backing off (0.1, 0.2, 0.4 s), not retrying every few ms
        _query(path, "DROP TRIGGER refuse")
        await store.append_batch(make_batch(frontier, [make_entry("o1", 3)]))
        await _eventually(lambda: _filed(path) == [0, 1, 2, 3], within_s=5)


async def test_pruning_removes_the_pruned_records_from_the_index(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with opened(f"sqlite:///{path}") as store:
        frontier = Frontier()
        await store.append_batch(make_batch(frontier, [make_entry("o1", seq) for seq in range(5)]))
        await store.append_batch(checkpoint_batch(frontier, checkpoint_at("o1", frontier)))
        await store.append_batch(make_batch(frontier, [make_entry("o1", seq) for seq in range(5, 10)]))
        await _eventually(lambda: _filed(path) == list(range(10)))
        await store.prune_entries("o1", 5)
        assert _filed(path) == list(range(5, 10))
        assert await _seqs(store) == list(range(9, 4, -1))


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
    async with opened(f"sqlite:///{path}") as store:
        assert _filed(path) == list(range(5))  # by the migration
        assert _query(path, "SELECT origin, through FROM search_filed") == [("o1", 4)]
        assert await _seqs(store, subject="user-2") == [2]
        assert await _seqs(store, outcome="denied") == [3]
    assert _created_indexes(path, "records") == set()


async def test_records_another_process_left_unfiled_are_filed_with_the_next_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers of one origin (CLI readers share one): the first stops before filing its record."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    first, second = await open_store(url), await open_store(url)
    try:
        monkeypatch.setattr(first._filer, "file", lambda: None)  # type: ignore[attr-defined]  # as if killed first
        frontier = Frontier()
        await first.append_batch(make_batch(frontier, [make_entry("o1", 0, subject="mallory")]))
        await second.append_batch(make_batch(frontier, [make_entry("o1", 1, subject="alice")]))
        await _eventually(lambda: _filed(tmp_path / "store.db") == [0, 1])
        assert await _seqs(second, subject="mallory") == [0]
    finally:
        await second.aclose()
        await first.aclose()


async def test_opening_needs_no_write_lock_when_nothing_is_left_to_file(tmp_path: Path) -> None:
    path = await _ten_stored(tmp_path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")  # as a long prune in another process would
        reader = await asyncio.wait_for(open_store(f"sqlite:///{path}"), 2)
        try:
            assert await _seqs(reader, subject="alice") == [8, 6, 4, 2, 0]
        finally:
            await reader.aclose()
        writer.execute("ROLLBACK")


async def test_records_pruned_before_they_were_filed_are_never_filed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.db"
    async with opened(f"sqlite:///{path}") as store:
        filer = store._filer  # type: ignore[attr-defined]
        file_for_real = filer.file
        monkeypatch.setattr(filer, "file", lambda: None)  # the prune comes before any filing
        frontier = Frontier()
        await store.append_batch(make_batch(frontier, [make_entry("o1", seq) for seq in range(5)]))
        await store.append_batch(checkpoint_batch(frontier, checkpoint_at("o1", frontier)))
        await store.append_batch(make_batch(frontier, [make_entry("o1", seq) for seq in range(5, 10)]))
        await store.prune_entries("o1", 5)
        monkeypatch.setattr(filer, "file", file_for_real)
        await store.append_batch(make_batch(frontier, [make_entry("o1", 10)]))
        await _eventually(lambda: _filed(path) == list(range(5, 11)))
        assert [e.seq for e in await store.search_entries(RecordQuery(limit=3))] == [10, 9, 8]


async def test_under_steady_writes_filing_rides_in_the_durable_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes that never pause: filing cannot wait for a pause (nor take the write lock once more)."""
    path = tmp_path / "store.db"
    async with opened(f"sqlite:///{path}") as store:
        monkeypatch.setattr(store._filer, "file", lambda: None)  # type: ignore[attr-defined]  # no pause comes
        frontier = Frontier()
        for start in range(0, 300, 3):
            await store.append_batch(make_batch(frontier, [make_entry("o1", seq) for seq in range(start, start + 3)]))
        assert _filed(path) == list(range(len(_filed(path))))
        assert len(_filed(path)) >= 256


async def test_filing_waits_quietly_while_another_process_holds_the_write_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.db"
    store = await open_store(f"sqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None)
    try:
        filer = store._filer  # type: ignore[attr-defined]
        file_for_real = filer.file
        monkeypatch.setattr(filer, "file", lambda: None)
        await _append_ten(store)  # committed, not filed
        other.execute("BEGIN IMMEDIATE")
        with caplog.at_level(logging.WARNING, "bastion.storage.sqlite_search"):
            monkeypatch.setattr(filer, "file", file_for_real)
            await asyncio.sleep(0.3)  # pauses come and go; each try finds the lock taken
            assert _query(path, "SELECT count(*) FROM search_index") == [(0,)]
            other.execute("COMMIT")
            await _eventually(lambda: _filed(path) == list(range(10)))
        assert caplog.records == []  # a busy database is no failure
    finally:
        other.close()
        await store.aclose()


async def test_filing_inside_a_commit_is_forgotten_only_once_that_commit_is_through(tmp_path: Path) -> None:
    path = await _ten_stored(tmp_path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("UPDATE search_filed SET through = 4")
        conn.execute("DELETE FROM search_index WHERE seq > 4")
        filer = SearchFiler(conn)
        filer.find_unfiled()
        conn.execute("BEGIN IMMEDIATE")
        assert filer.file_within(conn)
        conn.execute("ROLLBACK")  # the durable commit failed: the filing went with it
        assert filer.wait_s() is not None  # still noted
        filer.file()
        assert _filed(path) == list(range(10))
        assert filer.wait_s() is None


async def test_rows_filed_past_a_watermark_are_found_once(tmp_path: Path) -> None:
    """What a filing that failed and could not be undone leaves: index rows past the watermark."""
    async with _ten_filed(tmp_path) as (store, path):
        _query(path, "UPDATE search_filed SET through = 4")
        assert await _seqs(store) == list(range(9, -1, -1))
        assert await _seqs(store, subject="bob") == [9, 7, 5, 3, 1]


def _forge_index_rows(path: Path, origin: str, seqs: range | list[int]) -> None:
    """Index rows where no record is stored, newer than every record."""
    for seq in seqs:
        _query(path, "INSERT INTO search_index (origin, seq, time, kind, subject) VALUES (?, ?, '2099-01-01T00:00:00.000Z',"
                     " 'request', 'bob')", (origin, seq))


async def _search(store: AuditStore, query: RecordQuery) -> list[int]:
    return [e.seq for e in await store.search_entries(query)]


async def test_a_search_reads_on_past_index_rows_that_have_no_record(tmp_path: Path) -> None:
    """Searches drop such rows (forged, or left by deleted records) after the limit: they must not
    take the places of the records past them."""
    async with _ten_filed(tmp_path) as (store, path):
        _forge_index_rows(path, "o1", [20, 21])
        _forge_index_rows(path, "o9", range(3))  # an origin with no record, head or checkpoint
        assert await _search(store, RecordQuery(limit=3)) == [9, 8, 7]
        assert await _search(store, RecordQuery(subject="bob", limit=2)) == [9, 7]
        assert await _search(store, RecordQuery(origin="o1", limit=2)) == [9, 8]
        assert await _search(store, RecordQuery(origin="o9")) == []
        # A page that continues from a cursor reads on past such rows too.
        assert await _search(store, RecordQuery(limit=3, after=SearchCursor("2099-01-01T00:00:00.000Z", "o1", 21))) == [9, 8, 7]
        _query(path, "DELETE FROM records WHERE seq IN (5, 7)")  # their index rows stay behind
        assert await _search(store, RecordQuery(limit=4)) == [9, 8, 6, 4]
        assert await _search(store, RecordQuery(limit=4, after=SearchCursor("2026-11-24T10:00:06.000Z", "o1", 6))) == [4, 3, 2, 1]


async def test_a_search_of_an_intact_index_is_one_read_and_one_more_only_past_rows_without_a_record(tmp_path: Path) -> None:
    """The second read joins every index row it reads with its record: only a damaged index pays for that."""
    path = await _ten_stored(tmp_path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        reads: list[str] = []
        conn.set_trace_callback(lambda statement: reads.append(statement) if statement.startswith("SELECT") else None)
        assert [e.seq for e in search(conn, RecordQuery(limit=3))] == [9, 8, 7]
        assert len(reads) == 1
        _forge_index_rows(path, "o9", range(2))
        reads.clear()
        assert [e.seq for e in search(conn, RecordQuery(limit=3))] == [9, 8, 7]
        assert len(reads) == 2


def test_busy_is_recognised_in_every_extended_code_and_nothing_else() -> None:
    busy_recovery = sqlite3.OperationalError("database is locked")
    busy_recovery.sqlite_errorcode = sqlite3.SQLITE_BUSY | (1 << 8)
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL
    assert is_busy(busy_recovery)
    assert not is_busy(full)
    assert not is_busy(sqlite3.ProgrammingError("raised by the module itself, no code"))
