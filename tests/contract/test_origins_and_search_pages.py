"""Listing origins and paging through searches, on every store backend.

``fetch_origins`` is what ``verify`` and ``export`` take as "every origin": it must find a log by
its records and checkpoints, not by its (mutable) head row alone, and without reading every
record. A search returns at most ``MAX_SEARCH_LIMIT`` records and continues from a cursor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.contract.backends import (
    ALL_BACKENDS,
    PERSISTENT_BACKENDS,
    explain_postgres,
    explain_sqlite,
    opened,
    provision,
    run_sql,
)
from tests.contract.test_storage import checkpoint_at, checkpoint_batch, make_batch, make_entry

from bastion.audit.compact import Frontier
from bastion.audit.entry import LogEntry
from bastion.errors import StorageError
from bastion.storage import AuditStore, RecordQuery, SearchCursor, _sql
from bastion.storage.base import MAX_SEARCH_LIMIT, StrayIndexRow

pytestmark = pytest.mark.anyio


@pytest.fixture(params=ALL_BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AuditStore]:
    async with provision(request.param, tmp_path) as url, opened(url) as store:
        yield store


async def _write_logs(store: AuditStore, origins: list[str], records: int) -> None:
    """``records`` records per origin, each with a checkpoint over them; seq n of every origin shares one time."""
    for origin in origins:
        frontier = Frontier()
        await store.append_batch(make_batch(frontier, [make_entry(origin, seq) for seq in range(records)]))
        await store.append_batch(checkpoint_batch(frontier, checkpoint_at(origin, frontier)))


@pytest.mark.parametrize("backend", PERSISTENT_BACKENDS)
async def test_an_origin_is_listed_by_its_records_or_checkpoints_when_its_head_row_is_gone(
    backend: str, tmp_path: Path
) -> None:
    async with provision(backend, tmp_path) as url:
        async with opened(url) as store:
            await _write_logs(store, ["o1", "o2", "o3"], 3)
        placeholder = "?" if backend == "sqlite-file" else "$1"
        for origin in ("o1", "o3"):
            await run_sql(url, f"DELETE FROM log_heads WHERE origin = {placeholder}", origin)
        await run_sql(url, f"DELETE FROM records WHERE origin = {placeholder}", "o3")  # o3: checkpoints only
        async with opened(url) as store:
            assert await store.fetch_origins() == ["o1", "o2", "o3"]


async def test_sqlite_an_origin_is_listed_by_its_search_index_rows_alone(tmp_path: Path) -> None:
    """Index rows filed under an origin that has nothing else stored are verified only if verify walks it."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    async with opened(url) as store:
        await _write_logs(store, ["o1"], 3)
    await run_sql(url, "INSERT INTO search_index (origin, seq, time, kind) VALUES ('o0', 7, 't', 'request')")
    async with opened(url) as store:
        assert await store.fetch_origins() == ["o0", "o1"]
        assert [page async for page in store.stream_indexed_entries("o0")] == [[StrayIndexRow("o0", 7)]]


@pytest.mark.parametrize("backend", PERSISTENT_BACKENDS)
async def test_listing_origins_seeks_each_one_in_the_indexes_instead_of_reading_every_row(
    backend: str, tmp_path: Path
) -> None:
    async with provision(backend, tmp_path) as url:
        async with opened(url) as store:
            await _write_logs(store, [f"o{i}" for i in range(20)], 200)
        if backend == "sqlite-file":
            plan = explain_sqlite(url.removeprefix("sqlite:///"), _sql.SQLITE_ORIGINS_SQL, [])
            seeks = [
                "SEARCH records USING PRIMARY KEY (origin>?)",
                "SEARCH checkpoints USING COVERING INDEX checkpoints_origin_size (origin>?)",
                "SEARCH search_index USING PRIMARY KEY (origin>?)",
            ]
        else:
            plan = await explain_postgres(url, _sql.ORIGINS_SQL, [])
            seeks = ["Index Only Scan using records_pkey", "Index Only Scan using checkpoints_origin_size"]
            assert "Seq Scan on records" not in plan and "Seq Scan on checkpoints" not in plan, plan
    assert all(seek in plan for seek in seeks), plan


async def _all_pages(store: AuditStore, query: RecordQuery) -> list[list[LogEntry]]:
    """Search page by page, each continuing after the last record of the one before, until one is short."""
    pages: list[list[LogEntry]] = []
    while True:
        page = await store.search_entries(query)
        pages.append(page)
        if len(page) < query.limit:
            return pages
        last = page[-1]
        query = dataclasses.replace(query, after=SearchCursor(last.time, last.origin, last.seq))


@pytest.mark.parametrize("limit", [1, 3, 4])
async def test_pages_after_a_cursor_hold_every_match_once_in_order_when_times_tie(store: AuditStore, limit: int) -> None:
    await _write_logs(store, ["o1", "o2", "o3"], 4)  # o1/n, o2/n, o3/n share a time
    whole = await store.search_entries(RecordQuery(limit=100))
    assert [(e.origin, e.seq) for e in whole[:4]] == [("o1", 3), ("o2", 3), ("o3", 3), ("o1", 2)]
    pages = await _all_pages(store, RecordQuery(limit=limit))
    assert [e for page in pages for e in page] == whole
    assert all(len(page) == limit for page in pages[:-1])


async def test_a_cursor_combines_with_the_other_filters(store: AuditStore) -> None:
    await _write_logs(store, ["o1", "o2"], 6)
    query = RecordQuery(origin="o2", time_from="2026-11-24T10:00:01.000Z", limit=2)
    pages = await _all_pages(store, query)
    assert [[e.seq for e in page] for page in pages] == [[5, 4], [3, 2], [1]]


@pytest.mark.parametrize("limit", [0, -5, MAX_SEARCH_LIMIT + 1])
async def test_a_limit_outside_the_documented_range_is_refused(store: AuditStore, limit: int) -> None:
    await _write_logs(store, ["o1"], 2)
    with pytest.raises(StorageError, match=f"1..{MAX_SEARCH_LIMIT}"):
        await store.search_entries(RecordQuery(limit=limit))


async def test_time_from_is_inclusive_and_time_to_exclusive_at_the_same_millisecond(store: AuditStore) -> None:
    await _write_logs(store, ["o1"], 6)  # seq n at 10:00:0n.000
    query = RecordQuery(time_from="2026-11-24T10:00:02.000Z", time_to="2026-11-24T10:00:04.000Z")
    assert [e.seq for e in await store.search_entries(query)] == [3, 2]

