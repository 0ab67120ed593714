"""One contract suite for every ApiKeyStore a store exposes as ``store.api_keys``: SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.contract.backends import POSTGRES, opened, provision

from bastion.errors import AuthenticationError, StorageError
from bastion.identity.apikey import ApiKeyRecord, ApiKeyStore, create_api_key, verify_api_key
from bastion.identity.refusal import Reason

pytestmark = pytest.mark.anyio



@pytest.fixture(params=["sqlite-file", "sqlite-memory", POSTGRES])
async def keys(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiKeyStore]:
    async with provision(request.param, tmp_path) as url, opened(url) as store:
        yield store.api_keys


@pytest.fixture(params=["sqlite-file", POSTGRES])
async def persistent_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with provision(request.param, tmp_path) as url:
        yield url


def make_record(key_id: str = "0123456789abcdef", **changes: object) -> ApiKeyRecord:
    fields: dict[str, object] = {
        "key_id": key_id, "secret_sha256": bytes(range(32)), "subject": "alice",
        "groups": frozenset({"ops", "dev"}), "created_at": 1_700_000_000.25,
        "expires_at": 1_800_000_000.5, "revoked_at": None, "last_used_at": None,
    }
    fields.update(changes)
    return ApiKeyRecord(**fields)  # type: ignore[arg-type]


async def test_record_reads_back_identically_when_stored(keys: ApiKeyStore) -> None:
    full = make_record("aaaaaaaaaaaaaaaa", revoked_at=1_750_000_000.125, last_used_at=1_740_000_000.0)
    bare = make_record("bbbbbbbbbbbbbbbb", groups=frozenset(), expires_at=None)
    await keys.store_api_key(full)
    await keys.store_api_key(bare)
    assert await keys.fetch_api_key(full.key_id) == full
    assert await keys.fetch_api_key(bare.key_id) == bare
    assert await keys.fetch_api_key("cccccccccccccccc") is None


async def test_store_is_refused_when_key_id_exists(keys: ApiKeyStore) -> None:
    original = make_record()
    await keys.store_api_key(original)
    with pytest.raises(StorageError):
        await keys.store_api_key(make_record(subject="mallory", secret_sha256=b"\xff" * 32))
    assert await keys.fetch_api_key(original.key_id) == original


async def test_store_is_refused_when_hash_is_not_sha256_sized(keys: ApiKeyStore) -> None:
    with pytest.raises(StorageError):
        await keys.store_api_key(make_record(secret_sha256=b"short"))
    assert await keys.list_api_keys() == []


async def test_list_returns_every_key_oldest_first_when_some_are_revoked(keys: ApiKeyStore) -> None:
    assert await keys.list_api_keys() == []
    newer = make_record("bbbbbbbbbbbbbbbb", created_at=2_000.0)
    older = make_record("aaaaaaaaaaaaaaaa", created_at=1_000.0, revoked_at=1_500.0)
    await keys.store_api_key(newer)
    await keys.store_api_key(older)
    assert await keys.list_api_keys() == [older, newer]


async def test_revoke_sets_time_and_keeps_it_when_revoked_again_later(keys: ApiKeyStore) -> None:
    await keys.store_api_key(make_record())
    assert await keys.revoke_api_key("0123456789abcdef", 200.0) is True
    assert await keys.revoke_api_key("0123456789abcdef", 300.0) is True
    stored = await keys.fetch_api_key("0123456789abcdef")
    assert stored is not None and stored.revoked_at == 200.0


async def test_revoke_takes_the_earlier_time_when_a_later_revocation_was_scheduled(keys: ApiKeyStore) -> None:
    await keys.store_api_key(make_record(revoked_at=5_000.0))
    assert await keys.revoke_api_key("0123456789abcdef", 100.0) is True
    stored = await keys.fetch_api_key("0123456789abcdef")
    assert stored is not None and stored.revoked_at == 100.0


async def test_revoke_reports_false_when_key_is_unknown(keys: ApiKeyStore) -> None:
    await keys.store_api_key(make_record())
    assert await keys.revoke_api_key("ffffffffffffffff", 100.0) is False
    assert [r.revoked_at for r in await keys.list_api_keys()] == [None]


async def test_touch_never_moves_last_use_back_when_writes_arrive_out_of_order(keys: ApiKeyStore) -> None:
    await keys.store_api_key(make_record())
    await keys.touch_api_key("0123456789abcdef", 500.0)
    await keys.touch_api_key("0123456789abcdef", 400.0)
    stored = await keys.fetch_api_key("0123456789abcdef")
    assert stored is not None and stored.last_used_at == 500.0
    await keys.touch_api_key("0123456789abcdef", 600.0)
    stored = await keys.fetch_api_key("0123456789abcdef")
    assert stored is not None and stored.last_used_at == 600.0


async def test_touch_creates_nothing_when_key_is_unknown(keys: ApiKeyStore) -> None:
    await keys.touch_api_key("ffffffffffffffff", 500.0)
    assert await keys.list_api_keys() == []


async def test_created_key_verifies_until_revoked_when_checked_through_the_store(keys: ApiKeyStore) -> None:
    plaintext, record = await create_api_key(keys, "ci-bot", ["deploy"], 3600.0, clock=lambda: 1_000.0)
    principal = await verify_api_key(keys, plaintext, clock=lambda: 1_500.0)
    assert principal.subject == "ci-bot" and principal.groups == frozenset({"deploy"})
    assert principal.client_id == record.key_id
    assert await keys.revoke_api_key(record.key_id, 2_000.0) is True
    with pytest.raises(AuthenticationError) as refused:
        await verify_api_key(keys, plaintext, clock=lambda: 2_000.0)
    assert refused.value.data["reason"] is Reason.API_KEY_REVOKED


async def test_exactly_one_store_wins_when_two_race_for_the_same_key_id(keys: ApiKeyStore) -> None:
    results = await asyncio.wait_for(asyncio.gather(
        keys.store_api_key(make_record(subject="a")), keys.store_api_key(make_record(subject="b")),
        return_exceptions=True), 10)
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "StorageError"]
    assert [r.subject for r in await keys.list_api_keys()] in (["a"], ["b"])


async def test_keys_survive_when_the_store_is_reopened(persistent_url: str) -> None:
    record = make_record(last_used_at=1_750_000_000.0)
    async with opened(persistent_url) as store:
        await store.api_keys.store_api_key(record)
    async with opened(persistent_url) as store:
        assert await store.api_keys.fetch_api_key(record.key_id) == record
