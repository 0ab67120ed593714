"""In-memory `ApiKeyStore`: a test double only; real stores live in the storage layer."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from bastion.errors import StorageError
from bastion.identity.apikey import ApiKeyRecord


class MemoryApiKeyStore:
    """Keeps records in a dict; counts touches; can be told to fail touches."""

    def __init__(self) -> None:
        self.records: dict[str, ApiKeyRecord] = {}
        self.touches: list[tuple[str, float]] = []
        self.fail_touch = False
        self.touched = asyncio.Event()

    async def store_api_key(self, record: ApiKeyRecord) -> None:
        if record.key_id in self.records:
            raise StorageError("duplicate key_id")
        self.records[record.key_id] = record

    async def fetch_api_key(self, key_id: str) -> ApiKeyRecord | None:
        return self.records.get(key_id)

    async def list_api_keys(self) -> Sequence[ApiKeyRecord]:
        return list(self.records.values())

    async def revoke_api_key(self, key_id: str, revoked_at: float) -> bool:
        record = self.records.get(key_id)
        if record is None:
            return False
        if record.revoked_at is None:
            self.records[key_id] = dataclasses.replace(record, revoked_at=revoked_at)
        return True

    async def touch_api_key(self, key_id: str, last_used_at: float) -> None:
        self.touched.set()
        if self.fail_touch:
            raise StorageError("store is down")
        self.touches.append((key_id, last_used_at))
        self.records[key_id] = dataclasses.replace(self.records[key_id], last_used_at=last_used_at)
