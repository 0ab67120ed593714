"""``bastion keys``: driven through ``bastion.cli.main.main`` against a temporary SQLite store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar, cast

import pytest

from bastion.cli.main import main
from bastion.errors import AuthenticationError
from bastion.identity.apikey import ApiKeyRecord, ApiKeyStore, verify_api_key
from bastion.identity.refusal import Reason
from bastion.storage import open_store
from bastion.storage.base import Store

T = TypeVar("T")


@pytest.fixture
def store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("BASTION_STORE", raising=False)
    return f"sqlite:///{tmp_path / 'bastion.db'}"


def with_keys(url: str, action: Callable[[ApiKeyStore], Awaitable[T]]) -> T:
    """Run ``action`` on the store's API keys outside the CLI (to seed or inspect)."""

    async def session() -> T:
        store = cast(Store, await open_store(url))
        try:
            return await action(store.api_keys)
        finally:
            await store.aclose()

    return asyncio.run(session())


def create(url: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[str, str]:
    """Create a key through the CLI; returns (key id, plaintext)."""
    assert main(["keys", "create", "--store", url, "--subject", "alice", "--groups", "ops, dev,,", *extra]) == 0
    lines = capsys.readouterr().out.splitlines()
    key_id = next(line.split()[-1] for line in lines if line.startswith("key id:"))
    return key_id, lines[-1]


def test_create_prints_a_key_that_verifies_when_created(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    key_id, plaintext = create(store_url, capsys, "--expires", "30d")
    assert plaintext.startswith(f"bst_{key_id}_")
    principal = with_keys(store_url, lambda keys: verify_api_key(keys, plaintext))
    assert (principal.subject, principal.groups, principal.client_id) == ("alice", frozenset({"ops", "dev"}), key_id)
    record = with_keys(store_url, lambda keys: keys.fetch_api_key(key_id))
    assert record is not None and record.expires_at is not None
    assert record.expires_at - record.created_at == 30 * 86400


def test_create_stores_a_key_without_expiry_when_none_is_given(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    key_id, _ = create(store_url, capsys)
    record = with_keys(store_url, lambda keys: keys.fetch_api_key(key_id))
    assert record is not None and record.expires_at is None


def test_create_exits_2_and_stores_nothing_when_duration_is_malformed(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--store", store_url, "--subject", "alice", "--expires", "30 days"]) == 2
    assert "not a duration" in capsys.readouterr().err
    assert with_keys(store_url, lambda keys: keys.list_api_keys()) == []


def test_create_exits_2_when_subject_is_empty(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--store", store_url, "--subject", ""]) == 2
    assert "needs a subject" in capsys.readouterr().err


def test_commands_exit_2_when_no_store_is_given(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "list"]) == 2
    assert "BASTION_STORE" in capsys.readouterr().err


def test_store_defaults_to_the_environment_when_no_option_is_given(
    store_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_STORE", store_url)
    key_id, _ = create(store_url, capsys)
    assert main(["keys", "list", "--json"]) == 0
    assert [row["key_id"] for row in json.loads(capsys.readouterr().out)] == [key_id]


def test_list_reports_status_and_times_when_keys_are_active_expired_or_revoked(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    digest = bytes.fromhex("ab" * 32)
    seeded = [
        ApiKeyRecord("aaaaaaaaaaaaaaaa", digest, "alice", frozenset({"ops"}), 1_000.0, last_used_at=1_060.0),
        ApiKeyRecord("bbbbbbbbbbbbbbbb", digest, "bob", frozenset(), 2_000.0, expires_at=2_001.0),
        ApiKeyRecord("cccccccccccccccc", digest, "carol", frozenset({"a", "b"}), 3_000.0, revoked_at=3_600.0),
    ]

    async def seed(keys: ApiKeyStore) -> None:
        for record in seeded:
            await keys.store_api_key(record)

    with_keys(store_url, seed)
    assert main(["keys", "list", "--store", store_url, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [
        {"key_id": "aaaaaaaaaaaaaaaa", "subject": "alice", "groups": ["ops"], "status": "active",
         "created_at": "1970-01-01T00:16:40Z", "expires_at": None, "revoked_at": None,
         "last_used_at": "1970-01-01T00:17:40Z"},
        {"key_id": "bbbbbbbbbbbbbbbb", "subject": "bob", "groups": [], "status": "expired",
         "created_at": "1970-01-01T00:33:20Z", "expires_at": "1970-01-01T00:33:21Z", "revoked_at": None,
         "last_used_at": None},
        {"key_id": "cccccccccccccccc", "subject": "carol", "groups": ["a", "b"], "status": "revoked",
         "created_at": "1970-01-01T00:50:00Z", "expires_at": None, "revoked_at": "1970-01-01T01:00:00Z",
         "last_used_at": None},
    ]
    assert main(["keys", "list", "--store", store_url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["ID", "SUBJECT", "GROUPS", "STATUS", "CREATED", "EXPIRES", "REVOKED", "LAST", "USED"]
    assert table[3].split() == ["cccccccccccccccc", "carol", "a,b", "revoked", "1970-01-01T00:50:00Z", "-",
                                "1970-01-01T01:00:00Z", "-"]
    assert "ab" * 32 not in "\n".join(table)


def test_list_never_shows_secret_or_hash_when_keys_exist(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    key_id, plaintext = create(store_url, capsys)
    record = with_keys(store_url, lambda keys: keys.fetch_api_key(key_id))
    assert record is not None
    for extra in ([], ["--json"]):
        assert main(["keys", "list", "--store", store_url, *extra]) == 0
        out = capsys.readouterr().out
        assert key_id in out
        assert plaintext.rsplit("_", 1)[-1] not in out and record.secret_sha256.hex() not in out


def test_revoke_makes_the_key_fail_verification_when_it_exists(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    key_id, plaintext = create(store_url, capsys)
    assert main(["keys", "revoke", "--store", store_url, key_id]) == 0
    assert capsys.readouterr().out.startswith(f"revoked {key_id} (alice) as of ")
    with pytest.raises(AuthenticationError) as refused:
        with_keys(store_url, lambda keys: verify_api_key(keys, plaintext))
    assert refused.value.data["reason"] is Reason.API_KEY_REVOKED


def test_revoke_keeps_the_earlier_time_when_the_key_was_already_revoked(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    record = ApiKeyRecord("aaaaaaaaaaaaaaaa", b"\0" * 32, "alice", frozenset(), 1_000.0, revoked_at=3_600.0)
    with_keys(store_url, lambda keys: keys.store_api_key(record))
    assert main(["keys", "revoke", "--store", store_url, record.key_id]) == 0
    assert capsys.readouterr().out == "revoked aaaaaaaaaaaaaaaa (alice) as of 1970-01-01T01:00:00Z\n"
    stored = with_keys(store_url, lambda keys: keys.fetch_api_key(record.key_id))
    assert stored == record


def test_revoke_exits_1_when_the_key_is_unknown(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    create(store_url, capsys)
    assert main(["keys", "revoke", "--store", store_url, "ffffffffffffffff"]) == 1
    assert "no API key 'ffffffffffffffff'" in capsys.readouterr().err
    assert [r.revoked_at for r in with_keys(store_url, lambda keys: keys.list_api_keys())] == [None]
