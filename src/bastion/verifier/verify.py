"""The offline audit-log verifier: records + checkpoints + public keys in, a Report out.

Owns the order of checks and how evidence maps to a problem kind (the checklist below). It
imports only bastion.audit.{canonical,hashing,compact,proof,checkpoint,keys,entry,timestamp_token},
bastion.errors, and from bastion.storage.base the shapes of what a store's searches read and the
definition of the search columns (``SearchColumns.from_doc``): no store, no network, no clock
unless the caller passes ``Options.now``.

Checklist (the step numbers tag the code in checkpoints.py (a)-(d), origin.py (1)-(8), searched.py (2c), (8b)
and timestamps.py (9a)-(9c)):

 0. Open every stored checkpoint first (checkpoints.py): (a) malformed note -> MALFORMED_CHECKPOINT;
    (b) no signature from a ring key -> UNKNOWN_KEY, a ring key's signature fails -> BAD_SIGNATURE,
    verified only by keys the ring does not bind to the signed origin (``KeyRing.may_sign``) ->
    KEY_NOT_FOR_ORIGIN, verified but dated (``bastion-time``) outside the key's window ->
    KEY_OUTSIDE_WINDOW; such a checkpoint proves nothing and is dropped. (c) Columns differing from
    the signed note -> MODIFIED_CHECKPOINT; the signed values are used. (d) A retention line must
    rebuild the signed root; a ``bastion-closed`` line marks the writer's shutdown.
 1. (1a) A row whose columns hold values of another type than the writer stores (a column rewritten
    outside the writer) -> MODIFIED_RECORD; its stored leaf hash, if intact, still enters the tree.
    Per row, hash the body. Non-canonical body -> MODIFIED_RECORD. Canonical but hashing to something
    other than the stored leaf hash -> MODIFIED_RECORD: the body was edited after the write and the
    stored hash is the original. The tree is then built from the *stored* hash, so later checkpoint
    roots still confirm the untouched records and one edit does not cascade into every checkpoint.
 2. The body's own "origin" must equal the row's; otherwise the record belongs to another log ->
    INSERTED_RECORD here (the other origin sees a gap). The body's "seq" is the authoritative position
    (it is covered by the leaf hash, hence by the roots); time/kind columns differing from the body ->
    MODIFIED_RECORD. (2b) A stored seq column that disagrees with the body's seq means the rows were
    renumbered (to hide a deletion or insertion) -> MODIFIED_RECORD once per run of equal offset.
    (2c) Rows read from a store come with what its searches match them by (``IndexedEntry``; exports
    carry none). For a record whose body hashes to its stored leaf hash: search columns differing
    from ``SearchColumns.from_doc(body)`` -> MODIFIED_RECORD naming them. A separate index row (SQLite
    ``search_index``), which the store hands over only where it is not a copy of the record's row,
    is compared with the body too, its time and kind included, and named ``search_index.<column>``;
    a record that searches find only through an index row but that has none (SQLite: filed, at or
    below its origin's watermark) is hidden from them -> MODIFIED_RECORD. Both only for a row stored
    at its body's seq (the index is keyed by the stored seq; a moved row is reported as moved). One
    finding per row names every differing column, time and kind included.
 3. Place the row by body seq. A seq below the next expected one, or already stashed -> INSERTED_RECORD
    (two records claim one position). A seq above it is stashed; if the missing seq arrives within
    ``reorder_window`` rows the rows were only stored out of order -> REORDERED_RECORDS at the first
    out-of-order position. (3b) If it never arrives the records are gone: DELETED_RECORD when a signed
    checkpoint covers the missing positions (they provably existed), else SEQUENCE_GAP (unsigned tail).
    After a gap the tree cannot be rebuilt, so later roots are not compared.
 4. Append the leaf hash to the frontier; compare every checkpoint (and the trusted one) at that size.
 5. Where the log starts: seq 0 starts an empty tree. A first seq S > 0 needs a retention checkpoint at
    size S, or an unsigned prefix frontier of size S (an export's window); its frontier continues the
    tree. Otherwise DELETED_RECORD for the head. Checkpoints below S predate the retention point and are
    not compared; a trusted checkpoint there -> TRUSTED_UNVERIFIABLE. The summary names S per origin.
 6. Roots (after the last row): because the rebuilt tree diverges for good once a wrong leaf enters,
    a mismatching checkpoint followed by a matching one is itself the odd one out -> INCONSISTENT_CHECKPOINT
    (a signed fork); a mismatch with no later match -> ROOT_MISMATCH at the first such size, naming the
    range since the last match where a record was rewritten along with its stored hash. A trusted
    checkpoint that mismatches is always INCONSISTENT_CHECKPOINT. Two checkpoints that both match the
    same rebuilt tree are consistent with each other by construction (RFC 9162 §2.1.4 would prove the
    same from their roots alone).
 7. Cadence: more than ``max_records_between_checkpoints`` records between consecutive checkpoints, a record
    that waited longer than ``max_seconds_between_checkpoints`` for its covering checkpoint, or an unsigned
    tail over either limit -> CHECKPOINT_GAP. (7b) Heartbeats: two checkpoints consecutive in signed time
    further apart than ``max_seconds_between_checkpoints``, or (with ``now``) a newest checkpoint older
    than that -> CHECKPOINT_GAP at the earlier one, unless it carries ``bastion-closed``.
 8. Tail: a checkpoint (or the trusted one) larger than the records present -> TRUNCATED_TAIL at the first
    missing seq. The records after the newest checkpoint are listed in the summary as unsigned.
    (8b) Search index rows where no record is stored (``StrayIndexRow``) -> MODIFIED_RECORD per run of
    seqs, except where the walk already reports records missing (the row is the trace of that deletion);
    also under an origin with no record at all (a store lists the origins of its index rows).
 9. RFC 3161 tokens, only when the auditor gives TSA certificates (timestamps.py), at the token's tree size:
    (9a) malformed, altered, or not chaining to those certificates (with the timeStamping key purpose)
    -> BAD_TIMESTAMP; (9b) a genuine token whose imprint is SHA-256 of no note stored at that size, or
    (9c) whose checkpoint's ``bastion-time`` is later than the token's genTime plus the tolerance
    -> TIMESTAMP_MISMATCH. A checkpoint without a token is no problem: timestamping is best-effort.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from bastion.audit.compact import Frontier
from bastion.audit.entry import LogEntry, StoredCheckpoint, StoredTimestamp
from bastion.audit.keys import KeyRing
from bastion.storage.base import IndexedEntry, StrayIndexRow
from bastion.verifier.checkpoints import OpenedCheckpoint, open_checkpoint
from bastion.verifier.origin import Options, OriginWalk
from bastion.verifier.report import Problem, Report, Summary
from bastion.verifier.timestamps import TimestampCheck, TimestampTrust, render_gen_time

PROGRESS_EVERY_RECORDS = 10_000
DEFAULT_OPTIONS = Options()


def verify_log(
    entries: Iterable[LogEntry | IndexedEntry | StrayIndexRow],
    checkpoints: Iterable[StoredCheckpoint],
    keys: KeyRing,
    trusted: StoredCheckpoint | None = None,
    on_progress: Callable[[int], None] | None = None,
    *,
    options: Options = DEFAULT_OPTIONS,
    timestamps: Iterable[StoredTimestamp] = (),
    tsa: TimestampTrust | None = None,
    prefixes: Mapping[str, Frontier] | None = None,
) -> Report:
    """Verify a log offline and return what was found (``Report.ok`` when nothing was).

    Preconditions: ``entries`` yields each origin's rows in stored seq order (origins may be
    interleaved), from a store with what its searches match them by (``AuditStore.stream_indexed_entries``);
    ``keys`` holds the log keys the auditor trusts, with their validity windows and
    origin bindings. ``timestamps`` are checked only when ``tsa`` names the TSA certificates the
    auditor trusts. ``prefixes`` gives, per origin, an unsigned frontier of the records before its
    first one (an export that starts mid-log): the tree continues from it and only the origin's
    later signed roots can confirm it. Never raises for bad log content: every finding becomes a
    ``Problem``.
    """
    problems: list[Problem] = []
    summary = Summary()
    stamps = TimestampCheck(tsa) if tsa is not None else None
    # (0) checkpoints, grouped by their signed origin.
    opened: dict[str, list[OpenedCheckpoint]] = {}
    for stored in checkpoints:
        summary.checkpoints += 1
        checkpoint, found = open_checkpoint(stored, keys)
        problems.extend(found)
        if checkpoint is not None:
            opened.setdefault(checkpoint.checkpoint.origin, []).append(checkpoint)
        if stamps is not None:
            stamps.add_checkpoint(stored, checkpoint.signed_at if checkpoint is not None else None)
    trusted_opened: OpenedCheckpoint | None = None
    if trusted is not None:
        trusted_opened, found = open_checkpoint(trusted, keys)
        problems.extend(found)
    walks: dict[str, OriginWalk] = {}

    def walk_for(origin: str) -> OriginWalk:
        if origin not in walks:
            mine = trusted_opened if trusted_opened and trusted_opened.checkpoint.origin == origin else None
            prefix = prefixes.get(origin) if prefixes is not None else None
            walks[origin] = OriginWalk(origin, opened.get(origin, []), mine, options, prefix)
        return walks[origin]

    # (1)-(4) rows.
    for item in entries:
        if isinstance(item, StrayIndexRow):
            walk_for(item.origin).stray(item.seq)
            continue
        entry, searched = (item.entry, item) if isinstance(item, IndexedEntry) else (item, None)
        summary.records += 1
        if isinstance(entry.time, str):  # (1a) reports a time column of another type
            summary.first_time = min(summary.first_time or entry.time, entry.time)
            summary.last_time = max(summary.last_time or entry.time, entry.time)
        walk_for(entry.origin).feed(entry, searched)
        if on_progress is not None and summary.records % PROGRESS_EVERY_RECORDS == 0:
            on_progress(summary.records)
    # (5)-(8) origins that had checkpoints but no rows still get their truncation checks.
    for origin in opened:
        walk_for(origin)
    if trusted_opened is not None:
        walk_for(trusted_opened.checkpoint.origin)
    for origin in sorted(walks):
        walk = walks[origin]
        walk.finish()
        problems.extend(walk.problems)
        if walk.first_seq:
            summary.starts[origin] = walk.first_seq
        unsigned = walk.unsigned()
        if unsigned is not None:
            summary.unsigned[origin] = unsigned
    summary.origins = sorted(walks)
    # (9) tokens on checkpoints.
    if stamps is not None:
        findings = stamps.check(timestamps)
        problems.extend(findings.problems)
        summary.timestamped_checkpoints = findings.timestamped_checkpoints
        summary.latest_timestamp = render_gen_time(findings.latest) if findings.latest is not None else None
    if on_progress is not None:
        on_progress(summary.records)
    return Report(summary, problems)
