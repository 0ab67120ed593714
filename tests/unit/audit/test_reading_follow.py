"""``reading.follow_entries`` and ``fetch_tail_start``: what ``bastion audit tail`` reads, on SQLite and PostgreSQL.

A store that cannot be read for a while (here: its records table or its schema renamed away, as
a failover or a restore might leave it) must not end a follow; it must end the first pass, so a
wrong store is reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from tests.contract.backends import PG_DSN, POSTGRES, provision, run_sql
from tests.contract.test_storage import make_batch, make_entry

from bastion.audit import reading
from bastion.audit.compact import Frontier
from bastion.audit.entry import LogEntry
from bastion.errors import StorageError
from bastion.storage import Store, open_store

pytestmark = pytest.mark.anyio

WAIT_S = 10.0
POLL_S = 0.01


async def _rename_postgres_schema(old: str, new: str) -> None:
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f"ALTER SCHEMA {old} RENAME TO {new}")
    finally:
        await conn.close()


class Outage:
    """Makes a store unreadable and readable again: its PostgreSQL schema or its SQLite records table renamed away."""

    def __init__(self, url: str) -> None:
        self._url = url

    async def begin(self) -> None:
        await self._rename(away=True)

    async def end(self) -> None:
        await self._rename(away=False)

    async def _rename(self, *, away: bool) -> None:
        if self._url.startswith("sqlite:"):
            old, new = ("records", "records_away") if away else ("records_away", "records")
            await run_sql(self._url, f"ALTER TABLE {old} RENAME TO {new}")
        else:
            schema = self._url.rsplit("schema=", 1)[1]
            old, new = (schema, f"{schema}_away") if away else (f"{schema}_away", schema)
            await _rename_postgres_schema(old, new)


@pytest.fixture(params=["sqlite-file", POSTGRES])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with provision(request.param, tmp_path) as provisioned:
        yield provisioned


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    opened = await open_store(url)
    try:
        await opened.append_batch(make_batch(Frontier(), [make_entry("o1", 0), make_entry("o1", 1)]))
        yield opened
    finally:
        await opened.aclose()


async def _until(condition: Callable[[], bool], what: str) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(POLL_S)

    try:
        await asyncio.wait_for(poll(), WAIT_S)
    except TimeoutError:
        pytest.fail(f"gave up waiting for {what}")


async def _next_seq(entries: AsyncIterator[LogEntry]) -> int:
    return (await asyncio.wait_for(anext(entries), WAIT_S)).seq


async def test_following_retries_with_growing_pauses_and_resumes_when_the_store_comes_back(
    store: Store, url: str
) -> None:
    pauses: list[float] = []
    errors: list[StorageError] = []

    def on_retry(exc: StorageError, pause_s: float) -> None:
        errors.append(exc)
        pauses.append(pause_s)

    entries = reading.follow_entries(store, "o1", 0, POLL_S, True, on_retry=on_retry)
    try:
        assert [await _next_seq(entries), await _next_seq(entries)] == [0, 1]
        outage = Outage(url)
        await outage.begin()
        pending = asyncio.ensure_future(anext(entries))
        await _until(lambda: len(pauses) >= 3, "three retries")
        await outage.end()
        frontier = Frontier()
        for entry in (make_entry("o1", 0), make_entry("o1", 1)):
            frontier.append(entry.leaf_hash)
        await store.append_batch(make_batch(frontier, [make_entry("o1", 2)]))
        assert (await asyncio.wait_for(pending, WAIT_S)).seq == 2
    finally:
        await entries.aclose()  # type: ignore[attr-defined]
    assert pauses[:3] == [POLL_S, 2 * POLL_S, 4 * POLL_S]
    assert all(isinstance(exc, StorageError) for exc in errors)


async def test_the_first_pass_fails_when_the_store_cannot_be_read(store: Store, url: str) -> None:
    outage = Outage(url)
    await outage.begin()
    try:
        retries: list[float] = []
        entries = reading.follow_entries(store, "o1", 0, POLL_S, True, on_retry=lambda exc, pause: retries.append(pause))
        with pytest.raises(StorageError):
            await asyncio.wait_for(anext(entries), WAIT_S)
        assert retries == []
    finally:
        await outage.end()


async def test_the_pauses_stop_growing_at_the_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    class FailsAfterTheFirstRead:
        def __init__(self) -> None:
            self.reads = 0

        async def stream_entries(self, origin: str, start_seq: int = 0, batch_size: int = 1000) -> AsyncIterator[LogEntry]:
            self.reads += 1
            if self.reads > 1:
                raise StorageError("down")
            nothing: list[LogEntry] = []
            for entry in nothing:
                yield entry

    monkeypatch.setattr(reading, "FOLLOW_RETRY_MAX_S", 4 * POLL_S)
    pauses: list[float] = []
    store: Any = FailsAfterTheFirstRead()
    entries = reading.follow_entries(store, "o1", 0, POLL_S, True, on_retry=lambda exc, pause: pauses.append(pause))
    pending = asyncio.ensure_future(anext(entries))
    try:
        await _until(lambda: len(pauses) >= 5, "five retries")
    finally:
        pending.cancel()
    assert pauses[:5] == [POLL_S, 2 * POLL_S, 4 * POLL_S, 4 * POLL_S, 4 * POLL_S]


async def test_tail_start_is_refused_for_an_origin_the_store_does_not_hold(store: Store) -> None:
    assert await reading.fetch_tail_start(store, "o1", 1) == 1
    assert await reading.fetch_tail_start(store, "o1", 10) == 0
    with pytest.raises(StorageError, match="no log of origin 'nobody'"):
        await reading.fetch_tail_start(store, "nobody", 10)
