"""``proving.build_inclusion_proof`` before and after retention: a retained record stays provable."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bastion.audit import proving, retention
from bastion.audit.keys import KeyRing, SigningKey
from bastion.audit.log import AuditLog, CheckpointPolicy
from bastion.audit.record import AuditEvent, EventKind
from bastion.errors import StorageError
from bastion.storage import Store, open_store

pytestmark = pytest.mark.anyio

ORIGIN = "gw.test/log"
KEY = SigningKey(ORIGIN, bytes(range(32)))
RING = KeyRing([KEY.public()])
RECORDS = 13
"""Not a power of two, so the newest tree has an imperfect right edge."""


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    """A log of RECORDS records with checkpoints at tree sizes 1, 5, 9 and 13."""
    opened = await open_store("sqlite:///:memory:")
    log = AuditLog(opened, origin=ORIGIN, signing_key=KEY, checkpoints=CheckpointPolicy(4, 3600, 3600))
    await log.start()
    for i in range(RECORDS):
        await log.append(AuditEvent(kind=EventKind.REQUEST, subject="alice", name=f"t{i}"))
    await log.aclose()
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.mark.parametrize("cut", range(1, RECORDS + 1))
async def test_every_retained_record_has_the_proof_it_had_before_the_prune(store: Store, cut: int) -> None:
    before = {seq: await proving.build_inclusion_proof(store, ORIGIN, seq) for seq in range(RECORDS)}
    await retention.prune(store, ORIGIN, cut, KEY)
    for seq in range(cut, RECORDS):
        proof = await proving.build_inclusion_proof(store, ORIGIN, seq)
        assert proof == before[seq]
        proving.verify_proof(proof, RING)


async def test_a_record_stays_provable_after_two_prunes(store: Store) -> None:
    await retention.prune(store, ORIGIN, 3, KEY)
    await retention.prune(store, ORIGIN, 7, KEY)
    for seq in range(7, RECORDS):
        proving.verify_proof(await proving.build_inclusion_proof(store, ORIGIN, seq), RING)


async def test_a_pruned_record_is_refused_as_not_stored(store: Store) -> None:
    await retention.prune(store, ORIGIN, 6, KEY)
    with pytest.raises(StorageError, match=r"record 'gw\.test/log'/5 is not stored"):
        await proving.build_inclusion_proof(store, ORIGIN, 5)


async def test_records_deleted_without_a_retention_checkpoint_are_refused(store: Store) -> None:
    await store.prune_entries(ORIGIN, 5)  # behind the ordinary checkpoint at 5: no frontier was signed
    with pytest.raises(StorageError, match="below seq 5 are gone without a retention checkpoint"):
        await proving.build_inclusion_proof(store, ORIGIN, 8)
