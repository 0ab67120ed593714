"""API keys: format, lifecycle (create, verify, revoke, expire), refusals and last-used writes."""

from __future__ import annotations

import hashlib

import anyio
import pytest

from bastion.errors import AuthenticationError, ConfigError
from bastion.identity.apikey import LastUsedRecorder, create_api_key, parse_duration, verify_api_key
from bastion.identity.principal import API_KEY_ISSUER, AuthMethod
from bastion.identity.refusal import Reason

from .memory_store import MemoryApiKeyStore

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now_s


async def refusal(store: MemoryApiKeyStore, presented: str, clock: Clock | None = None) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as caught:
        await verify_api_key(store, presented, clock=clock or Clock())
    assert caught.value.data["error"] == "invalid_token"
    return caught.value


async def refused(store: MemoryApiKeyStore, presented: str, clock: Clock | None = None) -> Reason:
    reason = (await refusal(store, presented, clock)).data["reason"]
    assert isinstance(reason, Reason)
    return reason


async def test_created_key_has_documented_format_and_stores_only_a_hash() -> None:
    store = MemoryApiKeyStore()
    plaintext, record = await create_api_key(store, "ci-bot", ["deployers"], 3600.0, clock=Clock())
    prefix, key_id, secret = plaintext[:4], plaintext[4:20], plaintext[21:]
    assert prefix == "bst_" and plaintext[20] == "_" and key_id == record.key_id
    assert len(secret) == 43  # 32 random bytes, url-safe base64 without padding
    assert record.secret_sha256 == hashlib.sha256(secret.encode()).digest()
    assert secret not in repr(store.records)
    assert record.expires_at == record.created_at + 3600.0
    assert store.records[key_id] == record


async def test_key_lifecycle_create_verify_revoke_refuse() -> None:
    store, clock = MemoryApiKeyStore(), Clock()
    plaintext, record = await create_api_key(store, "ci-bot", ["deployers"], None, clock=clock)
    principal = await verify_api_key(store, plaintext, clock=clock)
    assert principal.subject == "ci-bot"
    assert principal.issuer == API_KEY_ISSUER
    assert principal.groups == frozenset({"deployers"})
    assert principal.method is AuthMethod.API_KEY
    assert principal.client_id == record.key_id
    assert principal.expires_at is None
    assert await store.revoke_api_key(record.key_id, clock.now_s) is True
    assert await refused(store, plaintext, clock) is Reason.API_KEY_REVOKED
    assert await store.revoke_api_key("0" * 16, clock.now_s) is False


async def test_refuses_key_when_expired() -> None:
    store, clock = MemoryApiKeyStore(), Clock()
    plaintext, _ = await create_api_key(store, "ci-bot", [], 60.0, clock=clock)
    clock.now_s += 59
    await verify_api_key(store, plaintext, clock=clock)
    clock.now_s += 1
    assert await refused(store, plaintext, clock) is Reason.API_KEY_EXPIRED


async def test_refuses_key_when_secret_is_wrong_or_key_unknown() -> None:
    store = MemoryApiKeyStore()
    plaintext, _ = await create_api_key(store, "ci-bot", [], None)
    wrong_secret = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
    unknown_id = "bst_" + "0" * 16 + plaintext[20:]
    wrong = await refusal(store, wrong_secret)
    unknown = await refusal(store, unknown_id)
    assert wrong.data["reason"] is Reason.API_KEY_WRONG_SECRET
    assert unknown.data["reason"] is Reason.API_KEY_UNKNOWN
    assert wrong.data["error_description"] == unknown.data["error_description"]  # no oracle for key ids


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "bst_",
        "bst_0123456789abcdef",
        "bst_0123456789ABCDEF_" + "a" * 43,
        "bst_0123456789abcdef_" + "a" * 42,
        "bst_0123456789abcdef_" + "a" * 44,
        "xyz_0123456789abcdef_" + "a" * 43,
        "bst_0123456789abcdef_" + "a" * 42 + "=",
    ],
)
async def test_refuses_key_when_malformed(presented: str) -> None:
    store = MemoryApiKeyStore()
    assert await refused(store, presented) is Reason.API_KEY_MALFORMED


async def test_records_last_use_in_background_at_most_once_per_interval() -> None:
    store, clock = MemoryApiKeyStore(), Clock()
    plaintext, record = await create_api_key(store, "ci-bot", [], None, clock=clock)
    recorder = LastUsedRecorder(store, min_interval_s=60.0)
    await verify_api_key(store, plaintext, recorder=recorder, clock=clock)
    clock.now_s += 59
    await verify_api_key(store, plaintext, recorder=recorder, clock=clock)
    clock.now_s += 1
    await verify_api_key(store, plaintext, recorder=recorder, clock=clock)
    await recorder.aclose(timeout_s=5)
    assert store.touches == [(record.key_id, 1_700_000_000.0), (record.key_id, 1_700_000_060.0)]
    assert store.records[record.key_id].last_used_at == 1_700_000_060.0


async def test_failed_last_use_write_does_not_fail_the_call() -> None:
    store = MemoryApiKeyStore()
    plaintext, _ = await create_api_key(store, "ci-bot", [], None)
    store.fail_touch = True
    recorder = LastUsedRecorder(store)
    principal = await verify_api_key(store, plaintext, recorder=recorder)
    with anyio.fail_after(5):
        await store.touched.wait()
    await recorder.aclose(timeout_s=5)
    assert principal.subject == "ci-bot" and store.touches == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 2_592_000.0), ("12h", 43_200.0), ("1h30m", 5_400.0), ("2w", 1_209_600.0), ("45s", 45.0)],
)
def test_parse_duration_when_valid(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "0d", "1.5h", "-1d", "30 d", "30y"])
def test_parse_duration_raises_config_error_when_invalid(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


async def test_create_refuses_empty_subject_and_non_positive_lifetime() -> None:
    store = MemoryApiKeyStore()
    with pytest.raises(ConfigError):
        await create_api_key(store, "", [], None)
    with pytest.raises(ConfigError):
        await create_api_key(store, "ci-bot", [], 0.0)
    assert store.records == {}
