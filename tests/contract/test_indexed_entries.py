"""``AuditStore.stream_indexed_entries``: every record with what the store's searches match it by.

On every backend each record comes with its row's search columns as stored; on SQLite also an
index row that is not a copy of the record's row, whether searches cannot find the record at all
(filed without an index row), and index rows where no record is stored.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from tests.contract.backends import opened, run_sql
from tests.contract.test_sqlite_search_index import _append_ten, _query, _ten_filed
from tests.contract.test_storage import checkpoint_at, checkpoint_batch, make_batch, make_entry

from bastion.audit.compact import Frontier
from bastion.audit.keys import KeyRing
from bastion.audit.reading import verify_store
from bastion.errors import StorageError
from bastion.storage import AuditStore
from bastion.storage.base import IndexedEntry, SearchColumns, SearchIndexRow, StrayIndexRow, VerifiedRow
from bastion.verifier import ProblemKind

pytestmark = pytest.mark.anyio


async def _pages(store: AuditStore, batch_size: int = 1000) -> list[list[VerifiedRow]]:
    return [page async for page in store.stream_indexed_entries("o1", batch_size)]


async def _rows(store: AuditStore, batch_size: int = 1000) -> list[VerifiedRow]:
    return [row for page in await _pages(store, batch_size) for row in page]


def _intact(entry_rows: list[VerifiedRow]) -> bool:
    return all(
        isinstance(row, IndexedEntry)
        and row.columns == SearchColumns.from_body(row.entry.body)
        and (row.index_row, row.hidden) == (None, False)
        for row in entry_rows
    )


async def test_every_record_comes_with_its_search_columns_a_page_at_a_time(store_url: str) -> None:
    async with opened(store_url) as store:
        await _append_ten(store)
        pages = await _pages(store, batch_size=4)
        assert [len(page) for page in pages] == [4, 4, 2]
        rows = [row for page in pages for row in page]
        assert [row.entry for row in rows if isinstance(row, IndexedEntry)] == await store.fetch_entries("o1", 0, 10)
        assert [row.columns.subject for row in rows if isinstance(row, IndexedEntry)] == ["alice", "bob"] * 5
        assert _intact(rows)
        assert [len(page) for page in await _pages(store, batch_size=5)] == [5, 5, 0]
        assert [page async for page in store.stream_indexed_entries("nobody")] == [[]]
        with pytest.raises(StorageError):
            await _pages(store, batch_size=0)


async def test_a_search_column_is_passed_on_as_stored(persistent_store_url: str) -> None:
    async with opened(persistent_store_url) as store:
        await _append_ten(store)
    placeholder = "?" if persistent_store_url.startswith("sqlite") else "$1"
    await run_sql(persistent_store_url, f"UPDATE records SET subject = {placeholder} WHERE seq = 3", "mallory")
    async with opened(persistent_store_url) as store:
        rows = await _rows(store)
    row = rows[3]
    assert isinstance(row, IndexedEntry)
    assert row.columns == SearchColumns("mallory", "search", "s-1", "ok")
    assert _intact(rows[:3] + rows[4:])


async def test_a_row_stored_below_seq_0_is_streamed_too(persistent_store_url: str) -> None:
    """The writer stores none there, but searches would find one: verify must see it."""
    async with opened(persistent_store_url) as store:
        await _append_ten(store)
    forged = make_entry("o1", 3, subject="mallory")
    placeholders = ", ".join("?" if persistent_store_url.startswith("sqlite") else f"${i}" for i in range(1, 7))
    await run_sql(persistent_store_url, f"INSERT INTO records (origin, seq, time, kind, body, leaf_hash) VALUES ({placeholders})",
                  "o1", -5, forged.time, forged.kind, forged.body, forged.leaf_hash)
    async with opened(persistent_store_url) as store:
        assert [row.entry.seq for row in await _rows(store, batch_size=4) if isinstance(row, IndexedEntry)] == [-5, *range(10)]


async def test_sqlite_an_index_row_is_passed_on_only_where_it_is_not_a_copy_of_its_record(tmp_path: Path) -> None:
    async with _ten_filed(tmp_path) as (store, path):
        assert _intact(await _rows(store))
        _query(path, "UPDATE search_index SET subject = 'mallory', time = '2000-01-01T00:00:00.000Z' WHERE seq = 3")
        rows = await _rows(store)
        entry = await store.fetch_entry("o1", 3)
        assert entry is not None
        assert rows[3] == IndexedEntry(
            entry, SearchColumns.from_body(entry.body),
            SearchIndexRow("2000-01-01T00:00:00.000Z", entry.kind, "mallory", "search", "s-1", "ok"), False,
        )
        assert _intact(rows[:3] + rows[4:])


async def test_sqlite_a_filed_record_without_its_index_row_is_hidden_and_an_unfiled_one_is_not(tmp_path: Path) -> None:
    async with _ten_filed(tmp_path) as (store, path):
        # What a crash does to filing: the last ones are lost, searches read those records themselves.
        _query(path, "DELETE FROM search_index WHERE seq >= 6")
        _query(path, "UPDATE search_filed SET through = 5")
        assert _intact(await _rows(store, batch_size=3))
        _query(path, "DELETE FROM search_index WHERE seq = 4")
        rows = await _rows(store, batch_size=3)
        assert [row.hidden for row in rows if isinstance(row, IndexedEntry)] == [seq == 4 for seq in range(10)]
        _query(path, "DELETE FROM log_heads")  # searches read records past the watermark only for an origin's head
        rows = await _rows(store, batch_size=3)
        assert [row.hidden for row in rows if isinstance(row, IndexedEntry)] == [seq == 4 or seq >= 6 for seq in range(10)]


async def test_sqlite_index_rows_without_a_record_follow_the_records_of_their_page(tmp_path: Path) -> None:
    async with _ten_filed(tmp_path) as (store, path):
        _query(path, "DELETE FROM records WHERE seq = 4")
        _query(path, "INSERT INTO search_index (origin, seq, time, kind, subject) VALUES "
                     "('o1', -1, 't', 'request', 'alice'), ('o1', 12, 't', 'request', 'alice'), "
                     "('o1', 13, 't', 'request', 'alice'), ('o2', 5, 't', 'request', 'alice')")
        pages = await _pages(store, batch_size=3)
    seqs = [[row.entry.seq if isinstance(row, IndexedEntry) else ("stray", row.seq) for row in page] for page in pages]
    # The first page's range reaches down to the lowest seq a row can have; another origin's rows are its own.
    assert seqs == [[0, 1, 2, ("stray", -1)], [3, 5, 6, ("stray", 4)], [7, 8, 9], [("stray", 12), ("stray", 13)]]
    assert all(row == StrayIndexRow("o1", row.seq) for page in pages for row in page if isinstance(row, StrayIndexRow))


async def test_sqlite_nothing_is_stray_or_hidden_after_a_prune(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with opened(f"sqlite:///{path}") as store:
        frontier = Frontier()
        await store.append_batch(make_batch(frontier, [make_entry("o1", seq) for seq in range(5)]))
        await store.append_batch(checkpoint_batch(frontier, checkpoint_at("o1", frontier)))
        await store.append_batch(make_batch(frontier, [make_entry("o1", seq) for seq in range(5, 10)]))
        await store.prune_entries("o1", 5)
        rows = await _rows(store, batch_size=2)
        assert [row.entry.seq for row in rows if isinstance(row, IndexedEntry)] == list(range(5, 10))
        assert _intact(rows)


def _strays(path: Path, origin: str, seqs: range) -> None:
    with contextlib.closing(sqlite3.connect(path)) as database, database:
        database.executemany(
            "INSERT INTO search_index (origin, seq, time, kind, subject) VALUES (?, ?, 't', 'request', 'mallory')",
            [(origin, seq) for seq in seqs],
        )


def _kinds(pages: list[list[VerifiedRow]]) -> tuple[list[int], list[int]]:
    """The seqs of the records and of the strays of ``pages``, each page's records before its strays."""
    records: list[int] = []
    strays: list[int] = []
    for page in pages:
        entries = [row.entry.seq for row in page if isinstance(row, IndexedEntry)]
        assert page[: len(entries)] == [row for row in page if isinstance(row, IndexedEntry)]
        records += entries
        strays += [row.seq for row in page if isinstance(row, StrayIndexRow)]
    return records, strays


async def test_sqlite_index_rows_without_a_record_come_a_page_at_a_time_too(tmp_path: Path) -> None:
    async with _ten_filed(tmp_path) as (store, path):
        _strays(path, "o1", range(-8, 0))  # more than a page below the first record: records wait for them
        _query(path, "DELETE FROM records WHERE seq IN (4, 5, 6)")
        _strays(path, "o1", range(12, 19))
        pages = await _pages(store, batch_size=3)
    assert [
        [row.entry.seq if isinstance(row, IndexedEntry) else ("stray", row.seq) for row in page] for page in pages
    ] == [
        [("stray", -8), ("stray", -7), ("stray", -6)], [("stray", -5), ("stray", -4), ("stray", -3)],
        # A page's range ends at its third stray: its records past that come on the next page.
        [0, 1, 2, ("stray", -2), ("stray", -1)], [3, ("stray", 4), ("stray", 5), ("stray", 6)], [7, 8, 9],
        [("stray", 12), ("stray", 13), ("stray", 14)], [("stray", 15), ("stray", 16), ("stray", 17)], [("stray", 18)],
    ]


async def test_sqlite_many_index_rows_without_a_record_come_in_bounded_pages_and_one_finding_per_run(
    tmp_path: Path,
) -> None:
    """Forged index rows by the ten thousand cost verify a page at a time, not all at once."""
    async with _ten_filed(tmp_path) as (store, path):
        _strays(path, "zz/forged", range(50_000))  # an origin with no record at all
        _strays(path, "o1", range(20, 50_020))  # past the origin's last record
        _strays(path, "o1", range(60_000, 60_100, 2))  # runs of one
        for origin, records, strays in (
            ("o1", list(range(10)), [*range(20, 50_020), *range(60_000, 60_100, 2)]),
            ("zz/forged", [], list(range(50_000))),
        ):
            pages = [page async for page in store.stream_indexed_entries(origin, 1000)]
            assert _kinds(pages) == (records, strays)
            assert max(sum(isinstance(row, StrayIndexRow) for row in page) for page in pages) == 1000
            assert max(sum(isinstance(row, IndexedEntry) for row in page) for page in pages) <= 1000
        report = await verify_store(store, ["o1", "zz/forged"], KeyRing())
    assert [(p.kind, p.origin, p.position) for p in report.problems] == [
        (ProblemKind.MODIFIED_RECORD, "o1", 20),
        *((ProblemKind.MODIFIED_RECORD, "o1", seq) for seq in range(60_000, 60_100, 2)),
        (ProblemKind.MODIFIED_RECORD, "zz/forged", 0),
    ]
    assert report.problems[0].reason.startswith("search_index rows for seq 20..50019 (50000), but no record stored there")
    assert report.problems[1].reason.startswith("a search_index row for seq 60000, but no record stored there")
    assert report.problems[-1].reason.startswith("search_index rows for seq 0..49999 (50000), but no record of this origin")
