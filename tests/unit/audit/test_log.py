"""The audit writer: group commit, durable receipts, fail-closed and best-effort failure, checkpoints, restart."""

from __future__ import annotations

import asyncio
import math
import socket
from datetime import UTC, datetime
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pydantic
import pytest

from bastion.audit.canonical import CanonicalEncodingError
from bastion.audit.checkpoint import CLOSED_EXTENSION, parse_checkpoint, parse_signed_note, verify_note
from bastion.audit.compact import root_from_leaf_hashes
from bastion.audit.entry import StoredCheckpoint
from bastion.audit.hashing import hash_leaf
from bastion.audit.keys import KeyRing, SigningKey, generate_signing_key, render_signing_key
from bastion.audit.log import AuditLog, CheckpointPolicy, Receipt
from bastion.audit.record import AuditEvent, EventKind, Outcome
from bastion.audit.settings import AuditMode, AuditSettings
from bastion.audit.witness import WitnessFanout
from bastion.errors import ConfigError, StorageError
from bastion.storage import AppendBatch, AuditStore, RecordQuery, open_store

pytestmark = pytest.mark.anyio

ORIGIN = "bastion.test/log"
WAIT_S = 5.0
QUIET = CheckpointPolicy(every_records=1_000_000, every_s=3600, heartbeat_s=3600)


class FlakyStore:
    """Delegates to a real store; can fail appends before or after they commit, or hold them at a gate."""

    def __init__(self, inner: AuditStore) -> None:
        self.inner = inner
        self.fail_before_commit = False
        self.fail_after_commit = False
        self.fail_next_batches = 0
        """Fail this many more record batches before they commit, whatever the flags say."""
        self.fail_after_next_batches = 0
        """Commit this many more record batches, then report each as failed."""
        self.fail_if: Callable[[AppendBatch], bool] = lambda batch: False
        """Fail a batch before it commits when this says so."""
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.records_entered = asyncio.Event()
        self.batches: list[AppendBatch] = []

    async def append_batch(self, batch: AppendBatch) -> None:
        self.entered.set()
        if batch.entries:
            self.records_entered.set()
        if self.gate is not None and batch.entries:
            await asyncio.wait_for(self.gate.wait(), WAIT_S)
        if self.fail_next_batches and batch.entries:
            self.fail_next_batches -= 1
            raise StorageError("disk on fire, briefly")
        if self.fail_before_commit or self.fail_if(batch):
            raise StorageError("disk on fire")
        await self.inner.append_batch(batch)
        self.batches.append(batch)
        if self.fail_after_next_batches and batch.entries:
            self.fail_after_next_batches -= 1
            raise StorageError("connection lost after commit")
        if self.fail_after_commit:
            raise StorageError("connection lost after commit")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RecordingWitness:
    """Collects checkpoints and lets a test wait until a condition on them holds."""

    name = "recording"

    def __init__(self, fail: bool = False) -> None:
        self.received: list[StoredCheckpoint] = []
        self.changed = asyncio.Condition()
        self.fail = fail

    async def store_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        if self.fail:
            raise StorageError("witness unreachable")
        async with self.changed:
            self.received.append(checkpoint)
            self.changed.notify_all()

    async def wait_for(self, predicate: Any) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: predicate(self.received)), WAIT_S)


@pytest.fixture
async def store() -> AsyncIterator[FlakyStore]:
    inner = await open_store("sqlite:///:memory:")
    try:
        yield FlakyStore(inner)
    finally:
        await inner.aclose()


@pytest.fixture
def key() -> SigningKey:
    return generate_signing_key(ORIGIN)


def make_log(store: AuditStore, key: SigningKey, **options: Any) -> AuditLog:
    options.setdefault("checkpoints", QUIET)
    return AuditLog(store, origin=ORIGIN, signing_key=key, **options)


def event(n: int = 0, **fields: Any) -> AuditEvent:
    return AuditEvent(kind=EventKind.REQUEST, outcome=Outcome.OK, subject=f"user-{n}", name="search", **fields)


async def test_receipts_match_stored_records_when_appends_complete(store: FlakyStore, key: SigningKey) -> None:
    log = make_log(store, key)
    await log.start()
    receipts = [await log.append(event(i)) for i in range(3)]
    await log.aclose()
    assert [r.seq for r in receipts] == [0, 1, 2]
    stored = await store.fetch_entries(ORIGIN, 0, 10)
    assert [e.leaf_hash for e in stored] == [r.leaf_hash for r in receipts]
    for entry in stored:
        body = orjson.loads(entry.body)
        assert (body["origin"], body["seq"], body["time"], body["kind"]) == (ORIGIN, entry.seq, entry.time, "request")
        assert entry.leaf_hash == hash_leaf(entry.body)


async def test_concurrent_appends_share_one_commit_when_queued_together(store: FlakyStore, key: SigningKey) -> None:
    log = make_log(store, key)
    await log.start()
    receipts = await asyncio.wait_for(asyncio.gather(*(log.append(event(i)) for i in range(200))), WAIT_S)
    await log.aclose()
    assert sorted(r.seq for r in receipts) == list(range(200))
    record_batches = [b for b in store.batches if b.entries]
    assert len(record_batches) < 10
    assert sum(len(b.entries) for b in record_batches) == 200


async def test_checkpoint_signs_the_stored_root_when_every_records_is_reached(store: FlakyStore, key: SigningKey) -> None:
    log = make_log(store, key, checkpoints=CheckpointPolicy(every_records=5, every_s=3600, heartbeat_s=3600))
    await log.start()
    for i in range(12):
        await log.append(event(i))
    leaves = [e.leaf_hash for e in await store.fetch_entries(ORIGIN, 0, 12)]
    sizes = [c.tree_size for c in await store.fetch_checkpoints(ORIGIN)]
    assert len(sizes) >= 2
    assert all(b - a <= 5 for a, b in zip([0, *sizes], [*sizes, 12], strict=True))  # never more than 5 unsigned
    await log.aclose()
    ring = KeyRing([key.public()])
    for cp in await store.fetch_checkpoints(ORIGIN):
        note = parse_signed_note(cp.note)
        verify_note(note, ring)
        assert parse_checkpoint(note.text).root_hash == cp.root_hash == root_from_leaf_hashes(leaves[: cp.tree_size])
    assert (await store.fetch_latest_checkpoint(ORIGIN)).tree_size == 12  # type: ignore[union-attr]


async def test_a_burst_never_leaves_more_than_every_records_between_checkpoints(store: FlakyStore, key: SigningKey) -> None:
    # 100 appends staged in one turn would make one batch; each checkpoint must still land on time.
    log = make_log(store, key, checkpoints=CheckpointPolicy(every_records=7, every_s=3600, heartbeat_s=3600))
    await log.start()
    await asyncio.gather(*(log.append(event(i)) for i in range(100)))
    await log.aclose()
    sizes = [c.tree_size for c in await store.fetch_checkpoints(ORIGIN)]
    assert sizes[-1] == 100
    assert max(b - a for a, b in zip([0, *sizes], sizes, strict=False)) <= 7


async def test_seq_and_root_continue_when_the_log_restarts(store: FlakyStore, key: SigningKey) -> None:
    first = make_log(store, key)
    await first.start()
    for i in range(3):
        await first.append(event(i))
    await first.aclose()
    second = make_log(store, key)
    await second.start()
    assert second.tree_size == 3
    assert (await second.append(event(9))).seq == 3
    await second.aclose()
    leaves = [e.leaf_hash for e in await store.fetch_entries(ORIGIN, 0, 10)]
    latest = await store.fetch_latest_checkpoint(ORIGIN)
    assert latest is not None and latest.tree_size == 4 and latest.root_hash == root_from_leaf_hashes(leaves)


async def test_every_waiter_gets_storage_error_when_the_store_fails_in_durable_mode(
    store: FlakyStore, key: SigningKey
) -> None:
    log = make_log(store, key)
    await log.start()
    await log.append(event(0))
    store.fail_before_commit = True
    results = await asyncio.wait_for(
        asyncio.gather(*(log.append(event(i)) for i in range(5)), return_exceptions=True), WAIT_S
    )
    assert all(isinstance(r, StorageError) for r in results)
    assert log.stats.store_failures >= 1 and log.stats.records_lost == 0
    store.fail_before_commit = False
    assert (await log.append(event(7))).seq == 1  # recovered from the store: nothing was written
    await log.aclose()


async def test_writer_resumes_after_the_stored_head_when_a_commit_landed_but_reported_failure(
    store: FlakyStore, key: SigningKey
) -> None:
    log = make_log(store, key)
    await log.start()
    store.fail_after_commit = True
    with pytest.raises(StorageError):
        await log.append(event(0))
    store.fail_after_commit = False
    assert (await log.append(event(1))).seq == 1  # seq 0 is in the store; it must not be reused
    await log.aclose()
    assert [e.seq for e in await store.fetch_entries(ORIGIN, 0, 10)] == [0, 1]


async def test_loss_is_counted_and_recorded_when_the_store_fails_in_best_effort_mode(
    store: FlakyStore, key: SigningKey
) -> None:
    log = make_log(store, key, mode=AuditMode.BEST_EFFORT)
    await log.start()
    store.fail_before_commit = True
    lost = await asyncio.wait_for(asyncio.gather(log.append(event(1)), log.append(event(2))), WAIT_S)
    assert lost == [Receipt(None, None, durable=False)] * 2
    assert log.stats.records_lost == 2
    store.fail_before_commit = False
    receipt = await log.append(event(3))
    await log.aclose()
    stored = await store.fetch_entries(ORIGIN, 0, 10)
    assert [e.kind for e in stored] == ["records_lost", "request"]
    assert orjson.loads(stored[0].body)["detail"] == {"records_lost": 2}
    assert receipt == Receipt(1, stored[1].leaf_hash)


async def test_losses_are_recorded_at_shutdown_when_no_record_follows_them(store: FlakyStore, key: SigningKey) -> None:
    log = make_log(store, key, mode=AuditMode.BEST_EFFORT)
    await log.start()
    store.fail_before_commit = True
    lost = await asyncio.wait_for(asyncio.gather(log.append(event(1)), log.append(event(2))), WAIT_S)
    assert [r.durable for r in lost] == [False, False]
    store.fail_before_commit = False
    await log.aclose()
    stored = await store.fetch_entries(ORIGIN, 0, 10)
    assert [e.kind for e in stored] == ["records_lost"]
    assert orjson.loads(stored[0].body)["detail"] == {"records_lost": 2}
    assert (await store.fetch_latest_checkpoint(ORIGIN)).tree_size == 1  # type: ignore[union-attr]


async def test_mode_switch_is_recorded_before_it_takes_effect(store: FlakyStore, key: SigningKey) -> None:
    log = make_log(store, key)
    await log.start()
    receipt = await log.set_mode(AuditMode.BEST_EFFORT, subject="admin", reason="maintenance")
    assert log.mode is AuditMode.BEST_EFFORT
    await log.aclose()
    entry = await store.fetch_entry(ORIGIN, receipt.seq)  # type: ignore[arg-type]
    assert entry is not None and entry.kind == "mode_changed"
    assert orjson.loads(entry.body)["detail"] == {"from": "durable", "to": "best_effort", "reason": "maintenance"}
    assert orjson.loads(entry.body)["who"] == {"subject": "admin"}


async def test_mode_stays_durable_when_the_switch_cannot_be_recorded(store: FlakyStore, key: SigningKey) -> None:
    log = make_log(store, key)
    await log.start()
    store.fail_before_commit = True
    with pytest.raises(StorageError):
        await log.set_mode(AuditMode.BEST_EFFORT)
    assert log.mode is AuditMode.DURABLE
    store.fail_before_commit = False
    await log.aclose()


async def test_appends_wait_when_the_queue_is_full(store: FlakyStore, key: SigningKey) -> None:
    store.gate = asyncio.Event()
    log = make_log(store, key, max_queue_records=2, max_batch_records=1)
    await log.start()
    in_flight = asyncio.create_task(log.append(event(0)))
    await asyncio.wait_for(store.records_entered.wait(), WAIT_S)  # the writer holds seq 0 at the gate
    queued = [asyncio.create_task(log.append(event(i))) for i in (1, 2)]
    blocked = asyncio.create_task(log.append(event(3)))
    finished, _ = await asyncio.wait({blocked}, timeout=0.2)  # bounded: the queue is full, so it must wait
    assert not finished and log.staged_records == 2
    store.gate.set()
    done = await asyncio.wait_for(asyncio.gather(in_flight, *queued, blocked), WAIT_S)
    assert [r.seq for r in done] == [0, 1, 2, 3]
    await log.aclose()


async def test_records_arriving_during_a_commit_are_sequenced_at_once_and_share_the_next(
    store: FlakyStore, key: SigningKey
) -> None:
    store.gate = asyncio.Event()
    log = make_log(store, key)
    await log.start()
    first = asyncio.create_task(log.append(event(0)))
    await asyncio.wait_for(store.records_entered.wait(), WAIT_S)  # seq 0 is being committed
    later = [asyncio.create_task(log.append(event(i))) for i in range(1, 6)]
    await asyncio.sleep(0)
    assert log.staged_records == 6  # the five sequenced and hashed while the store works, not after
    store.gate.set()
    receipts = await asyncio.wait_for(asyncio.gather(first, *later), WAIT_S)
    await log.aclose()
    assert [r.seq for r in receipts] == [0, 1, 2, 3, 4, 5]
    assert [[e.seq for e in b.entries] for b in store.batches if b.entries] == [[0], [1, 2, 3, 4, 5]]
    stored = await store.fetch_entries(ORIGIN, 0, 10)
    assert [e.leaf_hash for e in stored] == [r.leaf_hash for r in receipts]


async def test_staged_records_take_the_failed_batchs_seqs_when_it_did_not_land(store: FlakyStore, key: SigningKey) -> None:
    store.gate = asyncio.Event()
    store.fail_next_batches = 1
    log = make_log(store, key)
    await log.start()
    doomed = asyncio.create_task(log.append(event(0)))
    await asyncio.wait_for(store.records_entered.wait(), WAIT_S)
    staged = [asyncio.create_task(log.append(event(i))) for i in (1, 2)]
    await asyncio.sleep(0)
    store.gate.set()
    with pytest.raises(StorageError):
        await asyncio.wait_for(doomed, WAIT_S)
    receipts = await asyncio.wait_for(asyncio.gather(*staged), WAIT_S)
    await log.aclose()
    assert [r.seq for r in receipts] == [0, 1]  # no gap where the refused record would have been
    stored = await store.fetch_entries(ORIGIN, 0, 10)
    assert [orjson.loads(e.body)["who"]["subject"] for e in stored] == ["user-1", "user-2"]
    assert [e.leaf_hash for e in stored] == [r.leaf_hash for r in receipts]
    assert all(e.leaf_hash == hash_leaf(e.body) for e in stored)


async def test_staged_records_follow_a_failed_batch_that_landed_after_all(store: FlakyStore, key: SigningKey) -> None:
    store.gate = asyncio.Event()
    store.fail_after_next_batches = 1
    log = make_log(store, key)
    await log.start()
    landed = asyncio.create_task(log.append(event(0)))
    await asyncio.wait_for(store.records_entered.wait(), WAIT_S)
    staged = asyncio.create_task(log.append(event(1)))
    await asyncio.sleep(0)
    store.gate.set()
    with pytest.raises(StorageError):
        await asyncio.wait_for(landed, WAIT_S)
    assert (await asyncio.wait_for(staged, WAIT_S)).seq == 1  # seq 0 is in the store
    await log.aclose()
    assert [e.seq for e in await store.fetch_entries(ORIGIN, 0, 10)] == [0, 1]


async def test_one_loss_record_precedes_staged_records_when_best_effort_failures_repeat(
    store: FlakyStore, key: SigningKey
) -> None:
    store.gate = asyncio.Event()
    doomed = ["request", "records_lost"]  # the first batch, then the first loss record

    def fail_if(batch: AppendBatch) -> bool:
        if doomed and batch.entries[0].kind == doomed[0]:
            doomed.pop(0)
            return True
        return False

    store.fail_if = fail_if
    log = make_log(store, key, mode=AuditMode.BEST_EFFORT, max_batch_records=1)
    await log.start()
    tasks = [asyncio.create_task(log.append(event(i))) for i in range(4)]
    await asyncio.wait_for(store.records_entered.wait(), WAIT_S)
    store.gate.set()
    receipts = await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
    await log.aclose()
    assert not doomed
    # The first failure loses seq 0's record; the batches queued behind it find the head short
    # and come back. The second failure hits the loss record itself, which is then written once,
    # ahead of the records that were staged behind it all along.
    assert [r.durable for r in receipts] == [False, True, True, True]
    stored = await store.fetch_entries(ORIGIN, 0, 10)
    assert [e.kind for e in stored] == ["records_lost", "request", "request", "request"]
    assert orjson.loads(stored[0].body)["detail"] == {"records_lost": 1}
    assert [r.seq for r in receipts[1:]] == [1, 2, 3]


async def test_a_batch_is_refused_not_stranded_when_its_checkpoint_cannot_be_signed(
    store: FlakyStore, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log(store, key, checkpoints=CheckpointPolicy(every_records=1, every_s=3600, heartbeat_s=3600))
    await log.start()
    sign = log._sign

    def sign_fails_once(*args: Any) -> Any:
        monkeypatch.setattr(log, "_sign", sign)
        raise RuntimeError("signing key unavailable")

    assert (await asyncio.wait_for(log.append(event(0)), WAIT_S)).seq == 0
    monkeypatch.setattr(log, "_sign", sign_fails_once)
    with pytest.raises(StorageError):
        await asyncio.wait_for(log.append(event(1)), WAIT_S)
    assert (await asyncio.wait_for(log.append(event(2)), WAIT_S)).seq == 1  # the writer lives on
    await log.aclose()


async def test_a_record_whose_caller_gave_up_is_counted_when_its_batch_is_lost(store: FlakyStore, key: SigningKey) -> None:
    store.gate = asyncio.Event()
    store.fail_next_batches = 1
    log = make_log(store, key, mode=AuditMode.BEST_EFFORT)
    await log.start()
    gone = asyncio.create_task(log.append(event(0)))
    await asyncio.wait_for(store.records_entered.wait(), WAIT_S)
    gone.cancel()  # the client went away while its record was being committed
    store.gate.set()
    assert (await asyncio.wait_for(log.append(event(1)), WAIT_S)).durable
    await log.aclose()
    stored = await store.fetch_entries(ORIGIN, 0, 10)
    assert [e.kind for e in stored] == ["records_lost", "request"]
    assert orjson.loads(stored[0].body)["detail"] == {"records_lost": 1}


async def test_losses_are_recorded_at_shutdown_when_the_store_comes_back_after_a_failed_try(
    store: FlakyStore, key: SigningKey
) -> None:
    doomed = ["request", "records_lost"]  # the call's record, then the first try of the loss record

    def fail_if(batch: AppendBatch) -> bool:
        if doomed and batch.entries and batch.entries[0].kind == doomed[0]:
            doomed.pop(0)
            return True
        return False

    store.fail_if = fail_if
    log = make_log(store, key, mode=AuditMode.BEST_EFFORT)
    await log.start()
    assert not (await asyncio.wait_for(log.append(event(0)), WAIT_S)).durable
    await asyncio.wait_for(log.aclose(), WAIT_S)
    assert not doomed
    stored = await store.fetch_entries(ORIGIN, 0, 10)
    assert [(e.kind, orjson.loads(e.body)["detail"]) for e in stored] == [("records_lost", {"records_lost": 1})]


async def test_close_signs_a_closing_checkpoint_even_when_a_batch_checkpoint_covers_the_tree(
    store: FlakyStore, key: SigningKey
) -> None:
    moment = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)  # every checkpoint signed in the same millisecond
    log = make_log(store, key, clock=lambda: moment,
                   checkpoints=CheckpointPolicy(every_records=1, every_s=3600, heartbeat_s=3600))
    await log.start()
    await asyncio.wait_for(log.append(event(1)), WAIT_S)  # its batch carries the checkpoint at size 1
    await asyncio.wait_for(log.aclose(), WAIT_S)  # the final one says the same, and that the writer stopped
    stored = [c for c in await store.fetch_checkpoints(ORIGIN) if c.tree_size == 1]  # 0: the fixture's start
    assert [CLOSED_EXTENSION in parse_checkpoint(parse_signed_note(c.note).text).extensions for c in stored] == [False, True]


async def test_waiters_are_refused_not_stranded_when_the_head_cannot_be_reloaded(store: FlakyStore, key: SigningKey) -> None:
    log = make_log(store, key)
    await log.start()
    store.fail_next_batches = 1
    with pytest.raises(StorageError):
        await asyncio.wait_for(log.append(event(0)), WAIT_S)
    reload_head = store.inner.fetch_head

    async def malformed_head(origin: str) -> Any:
        store.fetch_head = reload_head  # type: ignore[method-assign]  # once
        raise ValueError("frontier does not fit its size")

    store.fetch_head = malformed_head  # type: ignore[method-assign]
    with pytest.raises(StorageError, match="could not be made durable"):
        await asyncio.wait_for(log.append(event(1)), WAIT_S)
    assert (await asyncio.wait_for(log.append(event(2)), WAIT_S)).seq == 0  # the writer lives on
    await log.aclose()


async def test_one_failed_head_reload_refuses_a_whole_batch_of_waiters(store: FlakyStore, key: SigningKey) -> None:
    # At a checkpoint boundary committed batches are cut to one record; refusals must not be.
    log = make_log(store, key, checkpoints=CheckpointPolicy(every_records=1, every_s=3600, heartbeat_s=3600))
    await log.start()
    store.fail_next_batches = 1
    with pytest.raises(StorageError):
        await asyncio.wait_for(log.append(event(0)), WAIT_S)
    reloads = 0

    async def store_still_down(origin: str) -> Any:
        nonlocal reloads
        reloads += 1
        raise StorageError("database is down")

    store.fetch_head = store_still_down  # type: ignore[method-assign]
    results = await asyncio.wait_for(asyncio.gather(*(log.append(event(i)) for i in range(50)), return_exceptions=True), WAIT_S)
    assert all(isinstance(r, StorageError) for r in results)
    assert reloads == 1


async def test_only_the_bad_event_fails_when_it_cannot_be_canonicalised(store: FlakyStore, key: SigningKey) -> None:
    log = make_log(store, key)
    await log.start()
    good, bad = await asyncio.wait_for(
        asyncio.gather(log.append(event(1)), log.append(event(2, arguments={"x": math.nan})), return_exceptions=True),
        WAIT_S,
    )
    assert isinstance(bad, CanonicalEncodingError)
    assert isinstance(good, Receipt) and good.seq == 0
    assert (await log.append(event(3))).seq == 1
    await log.aclose()


async def test_witness_gets_a_timed_checkpoint_when_records_arrive(store: FlakyStore, key: SigningKey) -> None:
    witness = RecordingWitness()
    log = make_log(store, key, checkpoints=CheckpointPolicy(every_records=1000, every_s=0.05, heartbeat_s=3600),
                   witnesses=WitnessFanout([witness]))
    await log.start()
    await log.append(event(1))
    await witness.wait_for(lambda got: any(c.tree_size == 1 for c in got))
    await log.aclose()
    assert witness.received == await store.fetch_checkpoints(ORIGIN)


async def test_timed_checkpoints_ride_with_batches_when_the_log_is_never_idle(store: FlakyStore, key: SigningKey) -> None:
    slow_append = store.inner.append_batch

    async def append_slowly(batch: AppendBatch) -> None:
        await asyncio.sleep(0.005)  # a commit is always on its way: the idle timer never gets a turn
        await slow_append(batch)

    store.inner.append_batch = append_slowly  # type: ignore[method-assign]
    log = make_log(store, key, checkpoints=CheckpointPolicy(every_records=1_000_000, every_s=0.05, heartbeat_s=3600))
    await log.start()
    deadline = asyncio.get_running_loop().time() + 0.4

    async def caller(n: int) -> None:
        while asyncio.get_running_loop().time() < deadline:
            await log.append(event(n))

    await asyncio.wait_for(asyncio.gather(*(caller(n) for n in range(4))), WAIT_S)
    under_load = log.stats.checkpoints_committed
    await log.aclose()
    assert under_load >= 3, under_load


async def test_heartbeat_checkpoints_repeat_when_the_log_is_idle(store: FlakyStore, key: SigningKey) -> None:
    witness = RecordingWitness()
    log = make_log(store, key, checkpoints=CheckpointPolicy(every_records=1000, every_s=3600, heartbeat_s=0.02),
                   witnesses=WitnessFanout([witness]))
    await log.start()
    await witness.wait_for(lambda got: len(got) >= 3)
    heartbeats = list(witness.received)
    await log.aclose()  # its final checkpoint may share a heartbeat's millisecond, so it is not compared
    assert {c.tree_size for c in heartbeats} == {0}
    assert len({c.note for c in heartbeats}) == len(heartbeats)  # each heartbeat is freshly signed


async def test_records_stay_durable_when_a_witness_fails(store: FlakyStore, key: SigningKey) -> None:
    fanout = WitnessFanout([RecordingWitness(fail=True)])
    log = make_log(store, key, checkpoints=CheckpointPolicy(every_records=1, every_s=3600, heartbeat_s=3600),
                   witnesses=fanout)
    await log.start()
    assert (await log.append(event(1))).seq == 0
    await log.aclose()
    assert fanout.stats.failures >= 1 and fanout.stats.delivered == 0
    assert len(await store.fetch_entries(ORIGIN, 0, 10)) == 1


async def test_close_writes_a_final_checkpoint_and_refuses_later_appends(store: FlakyStore, key: SigningKey) -> None:
    log = make_log(store, key)
    await log.start()
    await log.append(event(1))
    await log.aclose()
    latest = await store.fetch_latest_checkpoint(ORIGIN)
    assert latest is not None and latest.tree_size == 1
    with pytest.raises(StorageError):
        await log.append(event(2))


async def test_a_read_is_refused_when_its_record_is_not_durable_even_in_best_effort_mode(
    store: FlakyStore, key: SigningKey
) -> None:
    log = make_log(store, key, mode=AuditMode.BEST_EFFORT)
    await log.start()
    await log.append(event(1))
    store.fail_before_commit = True
    with pytest.raises(StorageError):
        await asyncio.wait_for(log.search_entries(RecordQuery(origin=ORIGIN), subject="auditor"), WAIT_S)
    store.fail_before_commit = False
    await log.aclose()


async def test_reads_are_recorded_before_results_are_returned(store: FlakyStore, key: SigningKey) -> None:
    log = make_log(store, key)
    await log.start()
    await log.append(event(1))
    found = await log.search_entries(RecordQuery(origin=ORIGIN, kind="log_read"), subject="auditor")
    await log.aclose()
    assert [e.kind for e in found] == ["log_read"]  # the read saw its own record: it was durable first
    body = orjson.loads(found[0].body)
    assert body["who"] == {"subject": "auditor"}
    assert body["detail"]["query"]["kind"] == "log_read"


async def test_start_fails_with_storage_error_when_the_store_is_closed(key: SigningKey) -> None:
    closed = await open_store("sqlite:///:memory:")
    await closed.aclose()
    with pytest.raises(StorageError):
        await make_log(closed, key).start()


async def test_log_is_built_from_the_audit_section_when_settings_validate(
    store: FlakyStore, key: SigningKey, tmp_path: Path
) -> None:
    key_file = tmp_path / "audit.key"
    key_file.write_text(render_signing_key(key), encoding="utf-8")
    settings = AuditSettings.model_validate({
        "mode": "best_effort", "origin": ORIGIN, "signing_key_file": str(key_file), "key_name": ORIGIN,
        "checkpoint_every_records": 1, "witnesses": {"directory": str(tmp_path / "witness")},
    })
    async with httpx.AsyncClient() as client:
        log = AuditLog.from_settings(store, settings, http_client=client)
        await log.start()
        await log.append(event(1))
        await log.aclose()
    assert log.mode is AuditMode.BEST_EFFORT
    copies = sorted((tmp_path / "witness").rglob("*.note"))
    assert [p.read_text(encoding="utf-8") for p in copies] == [c.note for c in await store.fetch_checkpoints(ORIGIN)]


def test_log_refuses_a_key_named_for_another_log(key: SigningKey, tmp_path: Path) -> None:
    key_file = tmp_path / "audit.key"
    key_file.write_text(render_signing_key(key), encoding="utf-8")
    settings = AuditSettings(signing_key_file=key_file, key_name="someone-else")
    with pytest.raises(ConfigError):
        AuditLog.from_settings(FlakyStore(None), settings, http_client=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "section",
    [
        {},  # no key source
        {"signing_key_file": "k", "signing_key_env": "K"},  # two key sources
        {"signing_key_env": "K", "mode": "sometimes"},
        {"signing_key_env": "K", "checkpoint_every_records": 0},
        {"signing_key_env": "K", "unknown": 1},
        {"signing_key_env": "K", "witnesses": {"s3": {"endpoint": "http://s3", "bucket": "b"}}},
    ],
    ids=["no-key", "two-keys", "bad-mode", "zero-cadence", "unknown-key", "s3-without-credentials"],
)
def test_audit_settings_reject_the_section_when_invalid(section: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        AuditSettings.model_validate(section)


def test_audit_settings_default_to_durable_with_a_host_origin() -> None:
    settings = AuditSettings(signing_key_env="BASTION_AUDIT_KEY")
    assert settings.mode is AuditMode.DURABLE
    assert settings.origin == f"bastion/{socket.gethostname()}"
