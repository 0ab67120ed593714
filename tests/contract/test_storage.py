"""One contract suite for every AuditStore implementation: SQLite (file and memory) and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from tests.contract.backends import PG_DSN, POSTGRES, explain_postgres, explain_sqlite, provision

from bastion.audit.canonical import canonical_bytes
from bastion.audit.compact import Frontier
from bastion.audit.entry import LogEntry, StoredCheckpoint
from bastion.audit.hashing import hash_leaf
from bastion.errors import ConfigError, HeadConflictError, StorageError
from bastion.storage import AppendBatch, AuditStore, LogHead, RecordQuery, _sql, open_store
from bastion.storage.base import SearchColumns
from bastion.storage.sqlite_setup import migration_statements

pytestmark = pytest.mark.anyio



@pytest.fixture
async def store(store_url: str) -> AsyncIterator[AuditStore]:
    opened = await open_store(store_url)
    try:
        yield opened
    finally:
        await opened.aclose()


def make_entry(origin: str, seq: int, *, subject: str = "alice", tool: str = "search", outcome: str = "ok",
               session_id: str = "s-1", minute: int = 0, kind: str = "request") -> LogEntry:
    time = f"2026-11-24T10:{minute:02d}:{seq % 60:02d}.000Z"
    body = canonical_bytes({
        "schema": "bastion.audit/1", "origin": origin, "seq": seq, "time": time, "kind": kind,
        "outcome": outcome, "who": {"subject": subject}, "what": {"name": tool},
        "correlation": {"session_id": session_id},
    })
    return LogEntry(origin=origin, seq=seq, time=time, kind=kind, body=body, leaf_hash=hash_leaf(body))


def make_batch(frontier: Frontier, entries: list[LogEntry]) -> AppendBatch:
    """Advance ``frontier`` over ``entries`` and return the batch that stores them."""
    for entry in entries:
        frontier.append(entry.leaf_hash)
    return AppendBatch(LogHead(entries[0].origin, frontier.size, frontier.hashes), tuple(entries))


def checkpoint_batch(frontier: Frontier, *checkpoints: StoredCheckpoint) -> AppendBatch:
    """A batch with no entries that only stores checkpoints (as heartbeats do)."""
    return AppendBatch(LogHead(checkpoints[0].origin, frontier.size, frontier.hashes), (), checkpoints)


def checkpoint_at(origin: str, frontier: Frontier) -> StoredCheckpoint:
    return StoredCheckpoint(origin, frontier.size, frontier.root(), f"{origin}\n{frontier.size}\n", "2026-11-24T10:00:00.000Z")


async def test_appended_entries_read_back_identically_when_fetched_by_seq_range(store: AuditStore) -> None:
    frontier = Frontier()
    entries = [make_entry("o1", i) for i in range(5)]
    await store.append_batch(make_batch(frontier, entries))
    assert await store.fetch_entries("o1", 0, 5) == entries
    assert await store.fetch_entries("o1", 2, 4) == entries[2:4]
    assert await store.fetch_entry("o1", 3) == entries[3]
    assert await store.fetch_entry("o1", 5) is None
    assert await store.fetch_entries("o2", 0, 5) == []


async def test_large_batch_reads_back_in_order_and_is_searchable_when_it_spans_several_statements(
    store: AuditStore,
) -> None:
    frontier = Frontier()
    entries = [make_entry("o1", i, subject=f"user-{i}") for i in range(150)]  # > 2 multi-row INSERTs
    await store.append_batch(make_batch(frontier, entries))
    assert await store.fetch_entries("o1", 0, 200) == entries
    assert [e.seq for e in await store.search_entries(RecordQuery(subject="user-149"))] == [149]


async def test_search_columns_given_with_the_batch_are_the_ones_indexed(store: AuditStore) -> None:
    entries = [make_entry("o1", 0, subject="alice")]
    batch = make_batch(Frontier(), entries)
    columns = (SearchColumns(subject="alice", tool="search", session_id="s-1", outcome="ok"),)
    await store.append_batch(AppendBatch(batch.head, batch.entries, (), columns))
    assert await store.search_entries(RecordQuery(subject="alice", tool="search", session_id="s-1")) == entries
    with pytest.raises(StorageError):  # columns for some entries only
        two = make_batch(Frontier(), [make_entry("o2", 0), make_entry("o2", 1)])
        await store.append_batch(AppendBatch(two.head, two.entries, (), columns))


async def test_origins_are_listed_when_several_logs_share_a_store(store: AuditStore) -> None:
    assert await store.fetch_origins() == []
    for origin in ("o2", "o1"):
        await store.append_batch(make_batch(Frontier(), [make_entry(origin, 0)]))
    assert await store.fetch_origins() == ["o1", "o2"]


async def test_head_matches_frontier_when_batches_accumulate(store: AuditStore) -> None:
    assert await store.fetch_head("o1") is None
    frontier = Frontier()
    await store.append_batch(make_batch(frontier, [make_entry("o1", i) for i in range(3)]))
    await store.append_batch(make_batch(frontier, [make_entry("o1", i) for i in range(3, 7)]))
    assert await store.fetch_head("o1") == LogHead("o1", 7, frontier.hashes)
    assert Frontier(7, frontier.hashes).root() == frontier.root()


async def test_batch_is_refused_whole_when_previous_size_does_not_match(store: AuditStore) -> None:
    frontier = Frontier()
    await store.append_batch(make_batch(frontier, [make_entry("o1", 0)]))
    stale = make_batch(Frontier(), [make_entry("o1", 0), make_entry("o1", 1)])
    with_checkpoint = AppendBatch(stale.head, stale.entries, (StoredCheckpoint("o1", 2, b"r" * 32, "n", "t"),))
    with pytest.raises(StorageError):  # a second writer that also believes the log is empty
        await store.append_batch(with_checkpoint)
    assert await store.fetch_entries("o1", 0, 10) == [make_entry("o1", 0)]
    assert await store.fetch_checkpoints("o1") == []
    assert (await store.fetch_head("o1")) == LogHead("o1", 1, frontier.hashes)


async def test_one_record_batch_is_refused_when_the_head_has_moved_past_it(store: AuditStore) -> None:
    # The commonest batch (one record, no checkpoint) takes a statement of its own on PostgreSQL.
    frontier = Frontier()
    committed = [make_entry("o1", seq) for seq in range(3)]
    await store.append_batch(make_batch(frontier, committed[:2]))
    stale_frontier = Frontier()
    make_batch(stale_frontier, committed[:1])
    with pytest.raises(HeadConflictError, match="at tree size 2, batch expects 1"):
        await store.append_batch(make_batch(stale_frontier, [make_entry("o1", 1, subject="stale")]))
    await store.append_batch(make_batch(frontier, committed[2:]))
    assert await store.fetch_entries("o1", 0, 5) == committed
    assert await store.fetch_head("o1") == LogHead("o1", 3, frontier.hashes)


async def test_exactly_one_writer_wins_when_two_race_for_the_same_seq(store: AuditStore) -> None:
    a = make_batch(Frontier(), [make_entry("o1", 0, subject="a")])
    b = make_batch(Frontier(), [make_entry("o1", 0, subject="b")])
    results = await asyncio.wait_for(asyncio.gather(store.append_batch(a), store.append_batch(b),
                                                    return_exceptions=True), 10)
    assert sorted(type(r).__name__ for r in results) == ["HeadConflictError", "NoneType"]
    stored = await store.fetch_entries("o1", 0, 5)
    assert len(stored) == 1
    assert stored[0] in (a.entries[0], b.entries[0])


async def test_batches_queued_behind_one_another_all_commit_in_order(store: AuditStore) -> None:
    frontier = Frontier()
    batches = [make_batch(frontier, [make_entry("o1", seq) for seq in range(start, start + 3)]) for start in (0, 3, 6)]
    other = make_batch(Frontier(), [make_entry("o2", 0)])
    queued = [store.append_batch(batches[0]), store.append_batch(other), *map(store.append_batch, batches[1:])]
    await asyncio.wait_for(asyncio.gather(*queued), 10)
    assert [e.seq for e in await store.fetch_entries("o1", 0, 20)] == list(range(9))
    assert await store.fetch_head("o1") == LogHead("o1", 9, frontier.hashes)
    assert await store.fetch_entries("o2", 0, 5) == [make_entry("o2", 0)]


async def test_a_batch_queued_behind_a_failing_one_finds_the_head_short_and_writes_nothing(store: AuditStore) -> None:
    frontier = Frontier()
    await store.append_batch(make_batch(frontier, [make_entry("o1", 0)]))
    stale_frontier = Frontier()
    stale = make_batch(stale_frontier, [make_entry("o1", 0, subject="stale")])  # expects an empty log
    behind = make_batch(stale_frontier, [make_entry("o1", 1)])  # continues the stale one
    results = await asyncio.wait_for(
        asyncio.gather(store.append_batch(stale), store.append_batch(behind), return_exceptions=True), 10
    )
    assert [type(r) for r in results] == [HeadConflictError, HeadConflictError]
    assert await store.fetch_entries("o1", 0, 5) == [make_entry("o1", 0)]
    assert await store.fetch_head("o1") == LogHead("o1", 1, frontier.hashes)


@pytest.mark.postgres
async def test_postgres_appends_go_on_when_the_server_drops_the_kept_connection(tmp_path: Path) -> None:
    async with provision("postgres", tmp_path) as url:
        store = await open_store(url)
        try:
            frontier = Frontier()
            await store.append_batch(make_batch(frontier, [make_entry("o1", 0)]))
            pid = store._appender.get_server_pid()  # type: ignore[attr-defined]  # the connection appends use
            admin = await asyncpg.connect(PG_DSN)
            try:
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            finally:
                await admin.close()
            await asyncio.sleep(0.2)  # asyncpg notices and hands the connection back to its pool
            await asyncio.wait_for(store.append_batch(make_batch(frontier, [make_entry("o1", 1)])), 10)
            assert [e.seq for e in await store.fetch_entries("o1", 0, 5)] == [0, 1]
        finally:
            await store.aclose()


async def test_batch_is_rejected_when_entries_are_not_contiguous(store: AuditStore) -> None:
    frontier = Frontier()
    entries = [make_entry("o1", 0), make_entry("o1", 2)]
    for e in entries:
        frontier.append(e.leaf_hash)
    with pytest.raises(StorageError):
        await store.append_batch(AppendBatch(LogHead("o1", 2, frontier.hashes), tuple(entries)))
    assert await store.fetch_head("o1") is None


async def test_concurrent_batches_of_many_origins_all_commit(store: AuditStore) -> None:
    frontiers = {f"o{i}": Frontier() for i in range(20)}
    batches = [make_batch(f, [make_entry(o, 0), make_entry(o, 1)]) for o, f in frontiers.items()]
    await asyncio.wait_for(asyncio.gather(*(store.append_batch(b) for b in batches)), 10)
    for origin, frontier in frontiers.items():
        assert await store.fetch_head(origin) == LogHead(origin, 2, frontier.hashes)


async def test_stream_yields_every_entry_in_seq_order_when_paged(store: AuditStore) -> None:
    frontier = Frontier()
    entries = [make_entry("o1", i) for i in range(10)]
    await store.append_batch(make_batch(frontier, entries))
    await store.append_batch(make_batch(Frontier(), [make_entry("other", 0)]))
    assert [e async for e in store.stream_entries("o1", batch_size=3)] == entries
    assert [e async for e in store.stream_entries("o1", start_seq=7, batch_size=5)] == entries[7:]
    assert [e async for e in store.stream_entries("o1", batch_size=10)] == entries


async def test_checkpoints_come_back_oldest_first_including_checkpoint_only_batches(store: AuditStore) -> None:
    frontier = Frontier()
    first_entry = make_entry("o1", 0)
    frontier.append(first_entry.leaf_hash)
    first = checkpoint_at("o1", frontier)  # committed with the entry it covers
    await store.append_batch(AppendBatch(LogHead("o1", 1, frontier.hashes), (first_entry,), (first,)))
    await store.append_batch(make_batch(frontier, [make_entry("o1", 1)]))
    second = checkpoint_at("o1", frontier)
    heartbeat = StoredCheckpoint("o1", 2, frontier.root(), "heartbeat", "2026-11-24T10:05:00.000Z")
    await store.append_batch(checkpoint_batch(frontier, second, heartbeat))
    assert await store.fetch_checkpoints("o1") == [first, second, heartbeat]
    assert await store.fetch_latest_checkpoint("o1") == heartbeat
    assert await store.fetch_checkpoints("o1", min_tree_size=2) == [second, heartbeat]
    assert await store.fetch_checkpoints("o1", min_tree_size=3) == []
    assert await store.fetch_latest_checkpoint("o2") is None


async def test_checkpoint_is_refused_when_ahead_of_the_head(store: AuditStore) -> None:
    frontier = Frontier()
    await store.append_batch(make_batch(frontier, [make_entry("o1", 0)]))
    ahead = StoredCheckpoint("o1", 5, frontier.root(), "n", "2026-11-24T10:05:00.000Z")
    with pytest.raises(StorageError):
        await store.append_batch(checkpoint_batch(frontier, ahead))
    assert await store.fetch_checkpoints("o1") == []


async def test_search_matches_indexed_fields_when_filters_combine(store: AuditStore) -> None:
    frontier = Frontier()
    entries = [
        make_entry("o1", 0, subject="alice", tool="search", outcome="ok", session_id="s1", minute=1),
        make_entry("o1", 1, subject="bob", tool="search", outcome="denied", session_id="s2", minute=2),
        make_entry("o1", 2, subject="alice", tool="delete", outcome="denied", session_id="s1", minute=3),
        make_entry("o1", 3, subject="alice", tool="delete", outcome="ok", session_id="s3", minute=4, kind="response"),
    ]
    await store.append_batch(make_batch(frontier, entries))
    other = make_entry("o2", 0, subject="alice", minute=5)
    await store.append_batch(make_batch(Frontier(), [other]))

    async def seqs(**filters: object) -> list[tuple[str, int]]:
        return [(e.origin, e.seq) for e in await store.search_entries(RecordQuery(**filters))]  # type: ignore[arg-type]

    assert await seqs(origin="o1", subject="alice") == [("o1", 3), ("o1", 2), ("o1", 0)]
    assert await seqs(subject="alice") == [("o2", 0), ("o1", 3), ("o1", 2), ("o1", 0)]
    assert await seqs(tool="search", outcome="denied") == [("o1", 1)]
    assert await seqs(session_id="s1") == [("o1", 2), ("o1", 0)]
    assert await seqs(kind="response") == [("o1", 3)]
    assert await seqs(origin="o1", time_from="2026-11-24T10:02:00.000Z", time_to="2026-11-24T10:04:00.000Z") == [
        ("o1", 2), ("o1", 1)]
    assert await seqs(subject="alice", limit=2) == [("o2", 0), ("o1", 3)]
    assert await seqs(subject="nobody") == []


async def test_search_finds_rare_and_common_outcomes_and_kinds(store: AuditStore) -> None:
    entries = [make_entry("o1", seq, minute=seq // 60) for seq in range(6)]
    entries[2] = make_entry("o1", 2, outcome="denied")
    entries[3] = make_entry("o1", 3, kind="log_read")
    entries[4] = make_entry("o1", 4, kind="notification", outcome="upstream_failed")
    await store.append_batch(make_batch(Frontier(), entries))

    async def seqs(**filters: object) -> list[int]:
        return [e.seq for e in await store.search_entries(RecordQuery(**filters))]  # type: ignore[arg-type]

    assert await seqs(outcome="denied") == [2]
    assert await seqs(outcome="upstream_failed", kind="notification") == [4]
    assert await seqs(outcome="ok") == [5, 3, 1, 0]
    assert await seqs(kind="log_read") == [3]
    assert await seqs(kind="request", outcome="ok") == [5, 1, 0]


@pytest.mark.parametrize(
    ("query", "index"),
    [(RecordQuery(outcome="denied"), "records_rare_outcome_time"), (RecordQuery(kind="log_read"), "records_rare_kind_time")],
)
@pytest.mark.parametrize("backend", ["sqlite-file", POSTGRES])
async def test_search_for_a_rare_value_uses_its_partial_index(
    backend: str, query: RecordQuery, index: str, tmp_path: Path
) -> None:
    """Only rare outcomes and kinds are indexed (migration 0005): a search for one must reach its index."""
    async with provision(backend, tmp_path) as url:
        store = await open_store(url)
        try:
            frontier = Frontier()
            for start in range(0, 3000, 500):
                batch = [make_entry("o1", seq, minute=seq // 60 % 60) for seq in range(start, start + 500)]
                batch[7] = make_entry("o1", start + 7, outcome="denied", minute=(start + 7) // 60 % 60)
                batch[9] = make_entry("o1", start + 9, kind="log_read", minute=(start + 9) // 60 % 60)
                await store.append_batch(make_batch(frontier, batch))
        finally:
            await store.aclose()
        if backend == "sqlite-file":
            sql, params = _sql.search_filed_sql(query)
            plan = explain_sqlite(url.removeprefix("sqlite:///"), sql, params)
            index = index.replace("records_", "search_index_")  # SQLite files records apart (migration 0006)
        else:
            sql, params = _sql.search_sql(query, _sql.dollar)
            plan = await explain_postgres(url, sql, params)
    assert index in plan, plan


async def test_prune_is_refused_when_no_checkpoint_has_that_size(store: AuditStore) -> None:
    frontier = Frontier()
    await store.append_batch(make_batch(frontier, [make_entry("o1", i) for i in range(4)]))
    with pytest.raises(StorageError):
        await store.prune_entries("o1", 2)
    assert len(await store.fetch_entries("o1", 0, 10)) == 4


async def test_prune_removes_only_records_below_the_retention_checkpoint(store: AuditStore) -> None:
    frontier = Frontier()
    await store.append_batch(make_batch(frontier, [make_entry("o1", i) for i in range(3)]))
    await store.append_batch(checkpoint_batch(frontier, checkpoint_at("o1", frontier)))
    await store.append_batch(make_batch(frontier, [make_entry("o1", 3), make_entry("o1", 4)]))
    assert await store.prune_entries("o1", 3) == 3
    assert [e.seq async for e in store.stream_entries("o1")] == [3, 4]
    assert await store.fetch_head("o1") == LogHead("o1", 5, frontier.hashes)
    await store.append_batch(make_batch(frontier, [make_entry("o1", 5)]))
    assert await store.fetch_entry("o1", 5) == make_entry("o1", 5)


async def test_data_and_head_survive_when_the_store_is_reopened(persistent_store_url: str) -> None:
    store_url = persistent_store_url
    frontier = Frontier()
    first = await open_store(store_url)
    try:
        await first.append_batch(make_batch(frontier, [make_entry("o1", 0), make_entry("o1", 1)]))
    finally:
        await first.aclose()
    again = await open_store(store_url)  # migrations already applied: the runner must skip them
    try:
        assert await again.fetch_head("o1") == LogHead("o1", 2, frontier.hashes)
        assert await again.fetch_entry("o1", 1) == make_entry("o1", 1)
    finally:
        await again.aclose()


async def test_several_openers_of_one_new_sqlite_file_all_succeed(tmp_path: Path) -> None:
    """Gateway instances and CLI readers starting together: one sets the file up, the others wait for it."""
    for attempt in range(5):  # each attempt a new file: the race is in setting one up
        url = f"sqlite:///{tmp_path / f'new-{attempt}.db'}"
        opened = await asyncio.wait_for(asyncio.gather(*(open_store(url) for _ in range(3))), 30)
        try:
            await opened[0].append_batch(make_batch(Frontier(), [make_entry("o1", 0)]))
            assert [e.seq for e in await opened[2].fetch_entries("o1", 0, 5)] == [0]
        finally:
            for store in opened:
                await store.aclose()


def test_migration_files_are_split_into_every_statement_they_hold() -> None:
    script = (
        "-- a comment; with a semicolon\n"
        "CREATE TABLE a (x TEXT DEFAULT 'one;two');\n"
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; SELECT 2; END;\n"
        "-- only a comment\n;\n"
        "CREATE TABLE b (y) -- the last one, without its semicolon"
    )
    statements = [s.strip() for s in migration_statements(script)]
    assert len(statements) == 3
    assert statements[0].endswith("CREATE TABLE a (x TEXT DEFAULT 'one;two');")
    assert statements[1] == "CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; SELECT 2; END;"
    assert statements[2].startswith("CREATE TABLE b (y)")
    conn = sqlite3.connect(":memory:")
    try:
        for statement in migration_statements(script):
            conn.execute(statement)
        assert {row[0] for row in conn.execute("SELECT name FROM sqlite_master")} == {"a", "b", "t"}
    finally:
        conn.close()


async def test_calls_fail_with_storage_error_when_the_store_is_closed(store_url: str) -> None:
    closed = await open_store(store_url)
    await closed.aclose()
    with pytest.raises(StorageError):
        await closed.append_batch(make_batch(Frontier(), [make_entry("o1", 0)]))
    with pytest.raises(StorageError):
        await closed.fetch_head("o1")


async def test_open_store_rejects_an_unknown_scheme() -> None:
    with pytest.raises(ConfigError):
        await open_store("mysql://localhost/db")
    with pytest.raises(ConfigError):
        await open_store("sqlite://")


async def test_open_store_fails_with_storage_error_when_the_path_is_unusable(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        await open_store(f"sqlite:///{tmp_path / 'missing-dir' / 'audit.db'}")
