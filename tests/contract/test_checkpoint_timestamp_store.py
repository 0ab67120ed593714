"""One contract suite for every CheckpointTimestampStore a store exposes as ``store.checkpoint_timestamps``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.contract.backends import ALL_BACKENDS, PERSISTENT_BACKENDS, opened, provision

from bastion.audit.entry import StoredTimestamp
from bastion.errors import StorageError
from bastion.storage.base import CheckpointTimestampStore

pytestmark = pytest.mark.anyio

ORIGIN = "gw.example/log"
TSA_A = "http://tsa-a.example/"
TSA_B = "http://tsa-b.example/"


def stamp(tree_size: int, tsa: str = TSA_A, origin: str = ORIGIN, token: bytes | None = None) -> StoredTimestamp:
    # Token bytes include every byte value, so a backend that mangles binary data is caught.
    body = token if token is not None else bytes(range(256)) + tree_size.to_bytes(8, "big") + tsa.encode()
    return StoredTimestamp(origin, tree_size, tsa, body, f"2026-07-01T12:00:{tree_size % 60:02d}.000Z")


@pytest.fixture(params=ALL_BACKENDS)
async def stamps(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CheckpointTimestampStore]:
    async with provision(request.param, tmp_path) as url, opened(url) as store:
        yield store.checkpoint_timestamps


async def test_tokens_read_back_identically_by_size_then_tsa(stamps: CheckpointTimestampStore) -> None:
    stored = [stamp(8, TSA_B), stamp(4, TSA_A), stamp(8, TSA_A), stamp(4, TSA_A, origin="other/log")]
    for item in stored:
        await stamps.store_timestamp(item)
    assert await stamps.fetch_timestamps(ORIGIN) == [stored[1], stored[2], stored[0]]
    assert await stamps.fetch_timestamps("other/log") == [stored[3]]
    assert await stamps.fetch_timestamps("nobody/log") == []


async def test_fetch_starts_at_min_tree_size_and_stops_at_limit(stamps: CheckpointTimestampStore) -> None:
    for size in (2, 4, 6, 8):
        await stamps.store_timestamp(stamp(size))
    assert [s.tree_size for s in await stamps.fetch_timestamps(ORIGIN, min_tree_size=4, limit=2)] == [4, 6]
    assert [s.tree_size for s in await stamps.fetch_timestamps(ORIGIN, min_tree_size=5)] == [6, 8]


async def test_latest_is_per_tsa_and_none_when_that_tsa_stamped_nothing(stamps: CheckpointTimestampStore) -> None:
    assert await stamps.fetch_latest_timestamp(ORIGIN, TSA_A) is None
    for item in (stamp(2, TSA_A), stamp(9, TSA_A), stamp(5, TSA_A), stamp(12, TSA_B), stamp(30, TSA_A, origin="o/2")):
        await stamps.store_timestamp(item)
    assert await stamps.fetch_latest_timestamp(ORIGIN, TSA_A) == stamp(9, TSA_A)
    assert await stamps.fetch_latest_timestamp(ORIGIN, TSA_B) == stamp(12, TSA_B)
    assert await stamps.fetch_latest_timestamp(ORIGIN, "http://tsa-c.example/") is None


async def test_store_is_refused_and_the_first_token_kept_when_origin_size_and_tsa_repeat(
    stamps: CheckpointTimestampStore,
) -> None:
    first = stamp(4)
    await stamps.store_timestamp(first)
    with pytest.raises(StorageError):
        await stamps.store_timestamp(stamp(4, token=b"forged"))
    await stamps.store_timestamp(stamp(4, TSA_B))  # another TSA may stamp the same checkpoint
    assert await stamps.fetch_timestamps(ORIGIN) == [first, stamp(4, TSA_B)]


@pytest.mark.parametrize("kind", PERSISTENT_BACKENDS)
async def test_tokens_survive_reopening_the_store(kind: str, tmp_path: Path) -> None:
    async with provision(kind, tmp_path) as url:
        async with opened(url) as store:
            await store.checkpoint_timestamps.store_timestamp(stamp(7))
        async with opened(url) as store:
            assert await store.checkpoint_timestamps.fetch_timestamps(ORIGIN) == [stamp(7)]
