"""Build small signed logs for verifier tests (records, checkpoints, key ring) and tamper helpers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from bastion.audit.canonical import canonical_bytes
from bastion.audit.checkpoint import (
    CLOSED_EXTENSION,
    Checkpoint,
    render_retention_extension,
    render_time_extension,
    sign_checkpoint,
)
from bastion.audit.compact import Frontier
from bastion.audit.entry import LogEntry, StoredCheckpoint
from bastion.audit.hashing import hash_leaf
from bastion.audit.keys import KeyRing, SigningKey

ORIGIN = "gw.example/log"
KEY = SigningKey(ORIGIN, bytes(range(32)))
RING = KeyRing([KEY.public()])
T0 = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def stamp(seconds: float) -> str:
    """RFC 3339 UTC with milliseconds, ``seconds`` after T0."""
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def entry(
    seq: int, origin: str = ORIGIN, note: str = "", row_seq: int | None = None, at_s: float | None = None
) -> LogEntry:
    """One record whose body carries its own origin, seq, time (``at_s`` after T0, default ``seq``) and kind."""
    time = stamp(seq if at_s is None else at_s)
    body = canonical_bytes({"origin": origin, "seq": seq, "time": time, "kind": "request", "note": note or f"r{seq}"})
    return LogEntry(origin, seq if row_seq is None else row_seq, time, "request", body, hash_leaf(body))


def checkpoint_at(
    entries: list[LogEntry],
    size: int,
    key: SigningKey = KEY,
    signed_s: float | None = None,
    retention: bool = False,
    closed: bool = False,
    origin: str | None = None,
) -> StoredCheckpoint:
    """Sign a checkpoint over the first ``size`` entries (by their stored leaf hashes).

    ``closed`` marks it as signed by a writer shutting down; ``origin`` overrides the entries' origin.
    """
    frontier = Frontier()
    for e in entries[:size]:
        frontier.append(e.leaf_hash)
    seconds = signed_s if signed_s is not None else max(size - 1, 0) + 0.5
    extensions = [render_time_extension(T0 + timedelta(seconds=seconds))]
    if retention:
        extensions.append(render_retention_extension(frontier))
    if closed:
        extensions.append(CLOSED_EXTENSION)
    cp = Checkpoint(origin or (entries[0].origin if entries else ORIGIN), size, frontier.root(), tuple(extensions))
    return StoredCheckpoint(cp.origin, size, cp.root_hash, sign_checkpoint(cp, key), stamp(seconds))


def build(n: int = 12, every: int = 4, origin: str = ORIGIN) -> tuple[list[LogEntry], list[StoredCheckpoint]]:
    """A log of ``n`` records with a checkpoint every ``every`` records and one at the end."""
    entries = [entry(i, origin) for i in range(n)]
    sizes = sorted({*range(every, n + 1, every), n})
    return entries, [checkpoint_at(entries, size) for size in sizes]


def rewrite(e: LogEntry, note: str, rehash: bool) -> LogEntry:
    """Replace a record's body (same origin/seq/time), optionally recomputing the stored hash."""
    forged = entry(e.seq, e.origin, note)
    return replace(e, body=forged.body, leaf_hash=forged.leaf_hash if rehash else e.leaf_hash)
