"""Retention: delete the oldest records of a log only behind a signed retention checkpoint.

Owns ``prune``: recompute the frontier at the cut from the stored leaf hashes, check that those
leaves still build the log's newest signed root, sign and store a ``bastion-retention`` checkpoint,
and copy it to the witnesses, and only then delete. The verifier can thus tell pruning from
deletion, and the witnesses hold the retention checkpoint where the database's administrators
cannot remove it; the line format is audit/checkpoint.py's and the DELETE is the store's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bastion.audit.checkpoint import (
    Checkpoint,
    parse_checkpoint,
    parse_signed_note,
    render_retention_extension,
    render_time_extension,
    sign_checkpoint,
    verify_note,
)
from bastion.audit.compact import Frontier
from bastion.audit.entry import StoredCheckpoint
from bastion.audit.hashing import hash_leaf
from bastion.audit.keys import KeyRing, SigningKey
from bastion.audit.reading import PAGE_RECORDS, fetch_retention_frontier
from bastion.audit.record import render_time
from bastion.audit.witness import Witness
from bastion.errors import StorageError, VerificationError
from bastion.storage.base import AppendBatch, AuditStore

HEAD_RETRIES = 5
"""A live writer may advance the head between our read and our write; retry that many times."""


class RetentionError(StorageError):
    """Raised when pruning is refused: the cut is out of range or the stored log does not verify."""


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What ``prune`` did: the first retained seq, how many rows went, and the signed note."""

    origin: str
    tree_size: int
    records_deleted: int
    note: str


async def _start_frontier(store: AuditStore, origin: str, first_seq: int) -> Frontier:
    """The frontier before the first stored record: empty, or the one a retention checkpoint signed."""
    if first_seq == 0:
        return Frontier()
    frontier = await fetch_retention_frontier(store, origin, first_seq)
    if frontier is not None:
        return frontier
    raise RetentionError(f"records of {origin!r} before seq {first_seq} are gone without a retention checkpoint")


async def compute_frontiers(store: AuditStore, origin: str, cut: int, end: int) -> tuple[Frontier, Frontier]:
    """Return the frontiers at ``cut`` and at ``end`` rebuilt from the stored leaf hashes.

    Every record in between must be present, in order, with a body that hashes to its leaf.

    Raises:
        RetentionError: a record is missing or does not hash to its stored leaf hash.
    """
    frontier: Frontier | None = None
    at_cut: Frontier | None = None
    async with contextlib.aclosing(store.stream_entries(origin, 0, PAGE_RECORDS)) as entries:  # type: ignore[type-var]
        async for entry in entries:
            if frontier is None:
                frontier = await _start_frontier(store, origin, entry.seq)
                if entry.seq > cut:
                    raise RetentionError(f"records of {origin!r} below seq {entry.seq} are already pruned")
            if entry.seq >= end:
                break  # rows beyond the signed size are not needed
            if entry.seq != frontier.size:
                raise RetentionError(f"record {origin!r}/{frontier.size} is missing; verify the log before pruning")
            if hash_leaf(entry.body) != entry.leaf_hash:
                raise RetentionError(f"record {origin!r}/{entry.seq} does not hash to its leaf; verify the log first")
            if frontier.size == cut:
                at_cut = frontier.copy()
            frontier.append(entry.leaf_hash)
    if frontier is not None and frontier.size == cut:
        at_cut = frontier.copy()
    if frontier is None or at_cut is None or frontier.size != end:
        raise RetentionError(f"records of {origin!r} up to seq {end} are not all stored")
    return at_cut, frontier


async def prune(
    store: AuditStore,
    origin: str,
    before: int,
    key: SigningKey,
    *,
    witnesses: Sequence[Witness] = (),
    witness_timeout_s: float = 30.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> PruneResult:
    """Delete records ``seq < before`` of ``origin`` after storing a signed retention checkpoint.

    Steps: (1) the newest checkpoint must cover ``before`` and be signed by ``key``; (2) the stored
    leaves must rebuild its root, and the frontier at ``before`` is taken on the way; (3) sign and
    store the retention checkpoint at ``before``, and copy it to every one of ``witnesses``;
    (4) delete. A crash or a witness failure between (3) and (4) leaves a valid log, with
    nothing deleted, that prunes on the next run.

    Raises:
        RetentionError: ``before`` is not covered by a checkpoint, the checkpoint is not ``key``'s,
            the stored records do not rebuild it, or a witness did not take the retention checkpoint.
        StorageError: the store cannot be read or written.
    """
    # (1)
    latest = await store.fetch_latest_checkpoint(origin)
    if before < 1 or latest is None or before > latest.tree_size:
        size = latest.tree_size if latest else 0
        raise RetentionError(f"--before must be in 1..{size}: only records a signed checkpoint covers can be pruned")
    try:
        note = parse_signed_note(latest.note)
        signed = parse_checkpoint(note.text)
        verify_note(note, KeyRing([key.public()]))
    except VerificationError as exc:
        raise RetentionError(f"the newest checkpoint of {origin!r} is not verifiable with this key: {exc}") from exc
    # (2)
    at_cut, at_end = await compute_frontiers(store, origin, before, signed.tree_size)
    if at_end.root() != signed.root_hash:
        raise RetentionError(f"stored records of {origin!r} do not rebuild the signed root at {signed.tree_size}")
    # (3)
    moment = clock()
    body = Checkpoint(
        origin, before, at_cut.root(), (render_time_extension(moment), render_retention_extension(at_cut))
    )
    checkpoint = StoredCheckpoint(origin, before, at_cut.root(), sign_checkpoint(body, key), render_time(moment))
    await _store_checkpoint(store, checkpoint)
    for witness in witnesses:
        try:
            async with asyncio.timeout(witness_timeout_s):
                await witness.store_checkpoint(checkpoint)
        except (StorageError, TimeoutError) as exc:
            raise RetentionError(
                f"witness {witness.name} did not take the retention checkpoint ({exc or 'timed out'}); nothing pruned"
            ) from exc
    # (4)
    deleted = await store.prune_entries(origin, before)
    return PruneResult(origin, before, deleted, checkpoint.note)


async def _store_checkpoint(store: AuditStore, checkpoint: StoredCheckpoint) -> None:
    """Append the checkpoint under the current head; a live writer may move the head meanwhile."""
    for _ in range(HEAD_RETRIES):
        head = await store.fetch_head(checkpoint.origin)
        if head is None:
            raise RetentionError(f"origin {checkpoint.origin!r} has no head")
        try:
            await store.append_batch(AppendBatch(head, (), (checkpoint,)))
            return
        except StorageError:
            latest = await store.fetch_head(checkpoint.origin)
            if latest is not None and latest.tree_size == head.tree_size:
                raise  # not a race with a writer: a real store failure
    raise RetentionError(f"origin {checkpoint.origin!r} kept growing; retention checkpoint not stored, nothing pruned")
