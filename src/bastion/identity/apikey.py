"""Bastion API keys: the `bst_<key_id>_<secret>` format, stored records and their checks.

Owns key creation, parsing, the SHA-256 secret hash (compared in constant time), expiry and
revocation rules, and the debounced `last_used_at` write that stays off the call path.
Persistence sits behind the `ApiKeyStore` protocol; its SQLite and PostgreSQL implementations
belong to the storage layer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bastion.errors import ConfigError, StorageError
from bastion.identity.principal import API_KEY_ISSUER, AuthMethod, Principal
from bastion.identity.refusal import Reason, refuse

logger = logging.getLogger(__name__)

KEY_PREFIX = "bst_"
KEY_ID_BYTES = 8  # rendered as 16 lower-case hex characters
SECRET_BYTES = 32  # rendered as 43 url-safe base64 characters, no padding
_PRESENTED = re.compile(r"bst_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_DURATION = re.compile(r"(?:\d+[wdhms])+")
_DURATION_PART = re.compile(r"(\d+)([wdhms])")
_UNIT_S = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_UNKNOWN_KEY_HASH = hashlib.sha256(b"no such key").digest()


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """What the store keeps for one key; never the secret itself. Times are POSIX seconds."""

    key_id: str
    secret_sha256: bytes
    subject: str
    groups: frozenset[str]
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None


class ApiKeyStore(Protocol):
    """Persistence for API key records (implemented by the storage layer)."""

    async def store_api_key(self, record: ApiKeyRecord) -> None:
        """Insert a new record; raises StorageError if the key_id exists."""

    async def fetch_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The record for `key_id`, or None."""

    async def list_api_keys(self) -> Sequence[ApiKeyRecord]:
        """All records, revoked and expired ones included."""

    async def revoke_api_key(self, key_id: str, revoked_at: float) -> bool:
        """Mark the key revoked (keeping an earlier revocation time); False if it does not exist."""

    async def touch_api_key(self, key_id: str, last_used_at: float) -> None:
        """Record that the key was used at `last_used_at`."""


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "30d", "12h", "1h30m" (units w, d, h, m, s).

    Raises:
        ConfigError: the text is not such a duration or is zero.
    """
    if not _DURATION.fullmatch(text):
        raise ConfigError(f"not a duration: {text!r} (use e.g. 30d, 12h, 1h30m)")
    seconds = sum(int(amount) * _UNIT_S[unit] for amount, unit in _DURATION_PART.findall(text))
    if seconds <= 0:
        raise ConfigError(f"duration must be positive: {text!r}")
    return float(seconds)


def _hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


async def create_api_key(
    store: ApiKeyStore,
    subject: str,
    groups: Iterable[str],
    expires_in_s: float | None,
    *,
    clock: Callable[[], float] = time.time,
) -> tuple[str, ApiKeyRecord]:
    """Create and store a key; returns the plaintext (shown once, never stored) and the record.

    Raises:
        ConfigError: empty subject or a non-positive lifetime.
        StorageError: the store could not save the record.
    """
    if not subject:
        raise ConfigError("an API key needs a subject")
    if expires_in_s is not None and expires_in_s <= 0:
        raise ConfigError("an API key's lifetime must be positive")
    key_id = secrets.token_hex(KEY_ID_BYTES)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode("ascii")
    now = clock()
    record = ApiKeyRecord(
        key_id=key_id,
        secret_sha256=_hash_secret(secret),
        subject=subject,
        groups=frozenset(groups),
        created_at=now,
        expires_at=None if expires_in_s is None else now + expires_in_s,
    )
    await store.store_api_key(record)
    return f"{KEY_PREFIX}{key_id}_{secret}", record


class LastUsedRecorder:
    """Writes `last_used_at` in the background, at most once per key per `min_interval_s`.

    A failed write is logged, never raised: it must not fail the call that used the key.
    """

    def __init__(self, store: ApiKeyStore, *, min_interval_s: float = 60.0) -> None:
        self._store = store
        self._min_interval_s = min_interval_s
        self._written_at: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def record(self, key_id: str, used_at: float) -> None:
        """Note a use; schedules a write unless one was made for this key recently."""
        last = self._written_at.get(key_id)
        if last is not None and used_at - last < self._min_interval_s:
            return
        self._written_at[key_id] = used_at
        task = asyncio.get_running_loop().create_task(self._touch(key_id, used_at), name=f"touch {key_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self, *, timeout_s: float = 5.0) -> None:
        """Wait up to `timeout_s` for outstanding writes, then cancel what is left."""
        pending = set(self._tasks)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout_s)
        for task in late:
            task.cancel()

    async def _touch(self, key_id: str, used_at: float) -> None:
        try:
            await self._store.touch_api_key(key_id, used_at)
        except StorageError:
            logger.warning("api key %s: could not record last use", key_id, exc_info=True)


async def verify_api_key(
    store: ApiKeyStore,
    presented: str,
    *,
    recorder: LastUsedRecorder | None = None,
    clock: Callable[[], float] = time.time,
) -> Principal:
    """The caller a presented `bst_...` key identifies; the use is handed to `recorder`.

    Raises:
        AuthenticationError: API_KEY_MALFORMED, API_KEY_UNKNOWN, API_KEY_WRONG_SECRET,
            API_KEY_REVOKED or API_KEY_EXPIRED in ``data["reason"]``.
        StorageError: the store could not be read (the call fails closed).
    """
    # 1. Shape, before any store access.
    match = _PRESENTED.fullmatch(presented)
    if match is None:
        raise refuse(Reason.API_KEY_MALFORMED, "The API key is malformed")
    key_id, secret = match.groups()

    # 2. Record and secret. An unknown key still costs one hash comparison, and both cases
    #    give the client the same text, so neither timing nor wording tells them apart.
    record = await store.fetch_api_key(key_id)
    expected = _UNKNOWN_KEY_HASH if record is None else record.secret_sha256
    secret_matches = hmac.compare_digest(_hash_secret(secret), expected)
    if record is None:
        raise refuse(Reason.API_KEY_UNKNOWN, "The API key is not valid")
    if not secret_matches:
        raise refuse(Reason.API_KEY_WRONG_SECRET, "The API key is not valid")

    # 3. Lifecycle.
    now = clock()
    if record.revoked_at is not None and record.revoked_at <= now:
        raise refuse(Reason.API_KEY_REVOKED, "The API key has been revoked")
    if record.expires_at is not None and now >= record.expires_at:
        raise refuse(Reason.API_KEY_EXPIRED, "The API key has expired")

    # 4. Last use is written in the background (debounced), never awaited here.
    if recorder is not None:
        recorder.record(key_id, now)
    return Principal(
        subject=record.subject,
        issuer=API_KEY_ISSUER,
        groups=record.groups,
        method=AuthMethod.API_KEY,
        client_id=key_id,
        expires_at=record.expires_at,
    )
