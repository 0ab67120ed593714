"""``AuditStore.stream_indexed_entries``: every record with what the store's searches match it by.

On every backend each record comes with its row's search columns as stored; on SQLite also an
index row that is not a copy of the record's row, whether searches cannot find the record at all
(filed without an index row), and index rows where no record is stored.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.contract.backends import opened, run_sql
from tests.contract.test_sqlite_search_index import _append_ten, _query, _ten_filed
from tests.contract.test_storage import checkpoint_at, checkpoint_batch, make_batch, make_entry

from bastion.audit.compact import Frontier
from bastion.errors import StorageError
from bastion.storage import AuditStore
from bastion.storage.base import IndexedEntry, SearchColumns, SearchIndexRow, StrayIndexRow, VerifiedRow

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
