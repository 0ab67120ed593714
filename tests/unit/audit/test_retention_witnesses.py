"""A retention checkpoint reaches the witnesses before anything is pruned, or nothing is pruned."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bastion.audit import retention
from bastion.audit.checkpoint import parse_checkpoint, parse_retention, parse_signed_note
from bastion.audit.entry import StoredCheckpoint
from bastion.audit.keys import SigningKey, generate_signing_key
from bastion.audit.log import AuditLog, CheckpointPolicy
from bastion.audit.record import AuditEvent, EventKind
from bastion.audit.witness import DirectoryWitness
from bastion.errors import StorageError
from bastion.storage import AuditStore, open_store

pytestmark = pytest.mark.anyio

ORIGIN = "gw/retention"


class RefusingWitness:
    name = "refusing"

    async def store_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        raise StorageError("bucket unreachable")


@pytest.fixture
def key() -> SigningKey:
    return generate_signing_key("gw")


@pytest.fixture
async def store(tmp_path: Path, key: SigningKey) -> AsyncIterator[AuditStore]:
    store = await open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    log = AuditLog(store, origin=ORIGIN, signing_key=key, checkpoints=CheckpointPolicy(every_records=4))
    await log.start()
    for i in range(10):
        await log.append(AuditEvent(kind=EventKind.REQUEST, subject=f"user-{i}"))
    await log.aclose()
    yield store
    await store.aclose()


async def test_the_retention_checkpoint_is_witnessed_before_records_are_pruned(
    store: AuditStore, key: SigningKey, tmp_path: Path
) -> None:
    result = await retention.prune(store, ORIGIN, 4, key, witnesses=[DirectoryWitness(tmp_path / "witness")])
    assert result.records_deleted == 4
    [copy] = [p for p in (tmp_path / "witness").rglob("*.note") if p.read_text() == result.note]
    text = parse_signed_note(copy.read_text()).text
    assert parse_checkpoint(text).tree_size == 4 and parse_retention(parse_checkpoint(text)) is not None


async def test_nothing_is_pruned_when_a_witness_does_not_take_the_retention_checkpoint(
    store: AuditStore, key: SigningKey
) -> None:
    with pytest.raises(retention.RetentionError, match="refusing"):
        await retention.prune(store, ORIGIN, 4, key, witnesses=[RefusingWitness()])
    assert len(await store.fetch_entries(ORIGIN, 0, 10)) == 10
