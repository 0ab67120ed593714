"""Walk one origin's records in order: rebuild its tree and classify every deviation.

Owns the per-origin state (expected seq, frontier, reorder stash, root comparisons, checkpoint
cadence and heartbeats, where the records start and which are unsigned, search index rows that
belong to no record). Each step below is numbered in verifier/verify.py's checklist; the numbers
in the comments refer to it. Opening checkpoints is checkpoints.py's; comparing search copies is
searched.py's; the report shape is report.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

from bastion.audit.canonical import CanonicalEncodingError, parse_canonical
from bastion.audit.compact import Frontier
from bastion.audit.entry import LogEntry
from bastion.audit.hashing import HASH_SIZE_BYTES, hash_leaf
from bastion.storage.base import IndexedEntry
from bastion.verifier.checkpoints import OpenedCheckpoint
from bastion.verifier.report import Problem, SeqRange
from bastion.verifier.report import ProblemKind as K
from bastion.verifier.searched import HIDDEN, Strays, agrees, differing_columns, stray_reason, stray_runs


@dataclass(frozen=True, slots=True)
class Options:
    """Verifier parameters: checkpoint cadence limits and the reorder look-ahead."""

    max_records_between_checkpoints: int = 1000
    max_seconds_between_checkpoints: float = 600.0
    """Also the longest silence between two checkpoints: a running writer signs a heartbeat every
    ``heartbeat_s`` (300 s by default), so twice that is the default."""
    reorder_window: int = 64
    """Rows stashed while waiting for a missing seq before it is declared deleted."""
    now: datetime | None = None
    """When given, a newest checkpoint (or an unsigned tail) older than the time limit is a checkpoint gap."""


@dataclass(frozen=True, slots=True)
class _Row:
    seq: int
    row_seq: int
    leaf_hash: bytes | None
    """None when the row's stored hash is unusable: the tree cannot be rebuilt past it."""
    time: datetime | None


_COLUMN_TYPES: tuple[tuple[str, type], ...] = (
    ("seq", int),
    ("time", str),
    ("kind", str),
    ("body", bytes),
    ("leaf_hash", bytes),
)
"""What the writer stores in each column (audit/entry.py); a store hands rows over as it finds them."""


def _wrong_columns(entry: LogEntry) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, kind in _COLUMN_TYPES:
        value = getattr(entry, name)
        if not isinstance(value, kind) or isinstance(value, bool):
            found[name] = f"{name} holds {type(value).__name__}, not {kind.__name__}"
    return found


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


class OriginWalk:
    """Feed rows of one origin in stored order, then ``finish()``; problems accumulate."""

    def __init__(
        self,
        origin: str,
        checkpoints: list[OpenedCheckpoint],
        trusted: OpenedCheckpoint | None,
        options: Options,
        prefix: Frontier | None = None,
    ):
        """``prefix``: an unsigned frontier of the records before the first one given (an export's
        prefix line); the tree continues from it, and only later signed roots can confirm it."""
        self.origin = origin
        self.problems: list[Problem] = []
        self.first_seq: int | None = None
        """The seq of the first record fed, None when there was none."""
        self._options = options
        self._checkpoints = sorted(checkpoints, key=lambda c: c.checkpoint.tree_size)
        self._trusted = trusted
        self._retention = {c.checkpoint.tree_size: c for c in checkpoints if c.retention is not None}
        self._prefix = prefix
        self._frontier: Frontier | None = None
        self._started = False
        self._start = 0
        self._next = 0
        self._pending: dict[int, _Row] = {}
        self._reorder_at: int | None = None
        self._last_offset = 0
        self._results: list[tuple[OpenedCheckpoint, bool, bool]] = []  # (checkpoint, matched, is_trusted)
        self._cover_index = 0
        self._late_reported: set[int] = set()
        self._tail_first_time: datetime | None = None
        self._last_time: datetime | None = None
        self._missing: list[tuple[int, int]] = []
        """The ``[start, end)`` seq ranges reported as missing records."""
        self._strays = Strays()
        """Seqs of search index rows where no record is stored, as runs."""
        self._fed = False
        """Whether any row of this origin was fed."""

    def _report(self, kind: K, position: int, reason: str) -> None:
        self.problems.append(Problem(kind, self.origin, position, reason))

    # -- steps 1-4: one row ---------------------------------------------------------------------

    def feed(self, entry: LogEntry, searched: IndexedEntry | None = None) -> None:
        """Check one row locally, then place it in the tree; ``searched``: what the store's searches
        match it by (for an export, None: nothing)."""
        self._fed = True
        # (1a) column types: a row rewritten outside the writer (e.g. SQLite ``CAST(body AS TEXT)``)
        # comes with values of another type, which cannot be hashed; the stored leaf hash, if
        # intact, still places the row so later roots confirm the records around it.
        wrong = _wrong_columns(entry)
        if wrong:
            position = self._next if "seq" in wrong else entry.seq
            self._report(
                K.MODIFIED_RECORD,
                position,
                f"stored columns of another type than the writer stores ({'; '.join(wrong.values())}): "
                "the row was rewritten outside the writer",
            )
            if "seq" not in wrong:  # without a seq the row has no place: the walk sees its seq missing
                usable = "leaf_hash" not in wrong and len(entry.leaf_hash) == HASH_SIZE_BYTES
                self._start_at(entry.seq)
                self._place(_Row(entry.seq, entry.seq, entry.leaf_hash if usable else None, _time(entry.time)))
            return
        # (1) leaf hash and canonical body.
        recomputed = hash_leaf(entry.body)
        body: object = None
        trusted = False
        try:
            body = parse_canonical(entry.body)
        except CanonicalEncodingError as exc:
            self._report(K.MODIFIED_RECORD, entry.seq, f"body is not canonical JSON ({exc})")
        else:
            trusted = recomputed == entry.leaf_hash
            if not trusted:
                self._report(K.MODIFIED_RECORD, entry.seq, "body does not hash to its stored leaf hash")
        leaf_hash = entry.leaf_hash if len(entry.leaf_hash) == HASH_SIZE_BYTES else recomputed
        # (2) the body's own origin, seq, time and kind against the row's columns.
        seq = entry.seq
        if isinstance(body, dict):
            body_seq, body_origin = body.get("seq"), body.get("origin")
            if body_origin != entry.origin:
                self._report(
                    K.INSERTED_RECORD, entry.seq, f"record of origin {body_origin!r} stored in this origin's log"
                )
                return
            if isinstance(body_seq, int) and not isinstance(body_seq, bool) and body_seq >= 0:
                seq = body_seq
            else:
                trusted = False
                self._report(K.MODIFIED_RECORD, entry.seq, "body carries no valid seq")
            self._check_columns(entry, body, seq, searched if trusted else None)
        elif body is not None:
            self._report(K.MODIFIED_RECORD, entry.seq, "body is not a JSON object")
        self._start_at(seq)
        self._place(_Row(seq, entry.seq, leaf_hash, _time(entry.time)))

    def _check_columns(self, entry: LogEntry, body: dict[str, Any], seq: int, searched: IndexedEntry | None) -> None:
        # (2) time/kind, and (2c) what searches match the record by, once its body is trusted (a
        # modified body is reported already, and its columns may well be the original's). Every
        # record comes here: the common case, all agreeing, is decided first.
        time_kind_agree = body.get("time") == entry.time and body.get("kind") == entry.kind
        if time_kind_agree and (searched is None or agrees(body, searched)):
            return
        differing = [] if time_kind_agree else [name for name in ("time", "kind") if body.get(name) != getattr(entry, name)]
        hidden = False
        if searched is not None:
            in_place = seq == entry.seq
            differing += differing_columns(body, searched, in_place=in_place)
            hidden = in_place and searched.hidden
        reasons = [f"stored columns differ from the body ({', '.join(differing)})"] if differing else []
        if hidden:
            reasons.append(HIDDEN)
        if reasons:
            self._report(K.MODIFIED_RECORD, seq, "; ".join(reasons))

    def stray(self, seq: int) -> None:
        """Note a search index row at ``seq`` where no record of this origin is stored."""
        self._strays.add(seq)

    def _start_at(self, first_seq: int) -> None:
        if not self._started:
            self.first_seq = first_seq
            self._begin(first_seq)

    def _place(self, row: _Row) -> None:
        # (3) position: duplicate, out of order, or next.
        if row.seq < self._next or row.seq in self._pending:
            self._report(K.INSERTED_RECORD, row.seq, f"seq {row.seq} is already held by another record")
            return
        if row.seq > self._next:
            if self._reorder_at is None:
                self._reorder_at = self._next
            self._pending[row.seq] = row
            if len(self._pending) > self._options.reorder_window:
                self._close_gap()
            return
        if self._reorder_at is None:
            self._check_offset(row)
        self._accept(row)
        self._drain(reordered=True)

    def _check_offset(self, row: _Row) -> None:
        # (2b) the stored seq column may be renumbered; report once per run of equal offset.
        offset = row.row_seq - row.seq
        if offset != self._last_offset and offset != 0:
            self._report(
                K.MODIFIED_RECORD, row.seq, f"stored seq column is {row.row_seq} but the record says {row.seq}"
            )
        self._last_offset = offset

    def _accept(self, row: _Row) -> None:
        # (4) append to the tree, then compare any checkpoint at the new size.
        if row.leaf_hash is None:
            self._frontier = None
        elif self._frontier is not None:
            self._frontier.append(row.leaf_hash)
        self._next += 1
        self._check_roots()
        self._check_cadence(row)

    def _drain(self, *, reordered: bool) -> None:
        while self._next in self._pending:
            row = self._pending.pop(self._next)
            if not reordered:
                self._check_offset(row)
            self._accept(row)
        if not self._pending and self._reorder_at is not None:
            if reordered:
                self._report(K.REORDERED_RECORDS, self._reorder_at, "records are stored out of their own seq order")
            self._reorder_at = None

    def _close_gap(self) -> None:
        # (3b) the missing seq never came: records were removed. Signed evidence decides the kind.
        resume = min(self._pending)
        covered = any(c.checkpoint.tree_size > self._next for c in self._checkpoints)
        kind = K.DELETED_RECORD if covered else K.SEQUENCE_GAP
        reason = f"{resume - self._next} records missing (seq {self._next}..{resume - 1})"
        reason += "; a signed checkpoint covers them" if covered else "; no signed checkpoint covers them yet"
        self._report(kind, self._next, reason)
        self._missing.append((self._next, resume))
        self._frontier = None
        self._next = resume
        self._reorder_at = None
        self._drain(reordered=False)

    # -- step 5: where the log starts --------------------------------------------------------------

    def _begin(self, first_seq: int) -> None:
        self._started = True
        if first_seq == 0:
            self._frontier = Frontier()
        elif first_seq in self._retention:
            retained = self._retention[first_seq].retention
            self._frontier = retained.copy() if retained is not None else None
        elif self._prefix is not None and self._prefix.size == first_seq:
            self._frontier = self._prefix.copy()
        else:
            starts = [*self._retention, *([self._prefix.size] if self._prefix is not None else [])]
            proven = max((size for size in starts if size < first_seq), default=0)
            self._report(
                K.DELETED_RECORD,
                proven,
                f"{first_seq - proven} records missing before seq {first_seq}; no retention checkpoint proves pruning",
            )
            self._missing.append((proven, first_seq))
        self._start = self._next = first_seq
        if self._trusted is not None and self._trusted.checkpoint.tree_size < first_seq:
            self._report(
                K.TRUSTED_UNVERIFIABLE,
                self._trusted.checkpoint.tree_size,
                f"trusted checkpoint predates the first retained seq {first_seq}",
            )
        self._cover_index = 0
        self._check_roots()

    # -- steps 6-7: roots and cadence --------------------------------------------------------------

    def _at_size(self, size: int) -> list[tuple[OpenedCheckpoint, bool]]:
        found = [(c, False) for c in self._checkpoints if c.checkpoint.tree_size == size]
        if self._trusted is not None and self._trusted.checkpoint.tree_size == size:
            found.append((self._trusted, True))
        return found

    def _check_roots(self) -> None:
        if self._frontier is None:
            return
        root = self._frontier.root()
        for checkpoint, is_trusted in self._at_size(self._next):
            self._results.append((checkpoint, checkpoint.checkpoint.root_hash == root, is_trusted))

    def _check_cadence(self, row: _Row) -> None:
        sizes = self._checkpoints
        while self._cover_index < len(sizes) and sizes[self._cover_index].checkpoint.tree_size <= row.seq:
            self._cover_index += 1
        if row.time is not None:
            self._last_time = row.time if self._last_time is None else max(self._last_time, row.time)
        if self._cover_index == len(sizes):
            if self._tail_first_time is None:
                self._tail_first_time = row.time
            return
        cover = sizes[self._cover_index]
        limit = self._options.max_seconds_between_checkpoints
        if (
            row.time is not None
            and cover.signed_at is not None
            and cover.checkpoint.tree_size not in self._late_reported
            and (cover.signed_at - row.time).total_seconds() > limit
        ):
            self._late_reported.add(cover.checkpoint.tree_size)
            self._report(K.CHECKPOINT_GAP, row.seq, f"record waited more than {limit:g} s for a checkpoint")

    # -- step 8: end of the origin -----------------------------------------------------------------

    def finish(self) -> None:
        """Resolve stashed rows, truncation, root results and checkpoint cadence."""
        if not self._started:
            self._begin(max([*self._retention, *([self._prefix.size] if self._prefix is not None else [])], default=0))
        while self._pending:
            if self._next in self._pending:
                self._drain(reordered=True)
            else:
                self._close_gap()
        self._finish_truncation()
        for first, count in stray_runs(self._strays, self._missing):  # (8b)
            self._report(K.MODIFIED_RECORD, first, stray_reason(first, count, origin_has_records=self._fed))
        self._finish_roots()
        self._finish_cadence()

    def _finish_truncation(self) -> None:
        sizes = [c.checkpoint.tree_size for c in self._checkpoints]
        if self._trusted is not None:
            sizes.append(self._trusted.checkpoint.tree_size)
        largest = max(sizes, default=0)
        if largest > self._next:
            self._report(
                K.TRUNCATED_TAIL, self._next, f"a checkpoint covers {largest} records but only {self._next} remain"
            )
            self._missing.append((self._next, largest))

    def _finish_roots(self) -> None:
        results = sorted(self._results, key=lambda r: r[0].checkpoint.tree_size)
        last_match = max((i for i, (_, matched, _) in enumerate(results) if matched), default=-1)
        good_before = self._start
        for index, (opened, matched, is_trusted) in enumerate(results):
            size = opened.checkpoint.tree_size
            if matched:
                good_before = size
                continue
            if is_trusted or index < last_match:
                who = "the trusted checkpoint" if is_trusted else "this signed checkpoint"
                self._report(
                    K.INCONSISTENT_CHECKPOINT, size, f"{who} disagrees with the tree that other checkpoints confirm"
                )
                continue
            self._report(
                K.ROOT_MISMATCH,
                size,
                f"records {good_before}..{size - 1} do not rebuild the signed root: a record in that range was "
                "rewritten together with its stored hash, or the checkpoint was signed over another tree",
            )
            return

    def _finish_cadence(self) -> None:
        limit = self._options.max_records_between_checkpoints
        previous = self._start
        for size in sorted(
            {c.checkpoint.tree_size for c in self._checkpoints if c.checkpoint.tree_size >= self._start}
        ):
            if size - previous > limit:
                self._report(
                    K.CHECKPOINT_GAP, previous, f"{size - previous} records between checkpoints (limit {limit})"
                )
            previous = size
        if self._next - previous > limit:
            self._report(K.CHECKPOINT_GAP, previous, f"{self._next - previous} records after the last checkpoint")
        if self._finish_heartbeats():
            return
        end = self._options.now or self._last_time
        limit_s = self._options.max_seconds_between_checkpoints
        if (
            self._tail_first_time is not None
            and end is not None
            and (end - self._tail_first_time).total_seconds() > limit_s
        ):
            self._report(K.CHECKPOINT_GAP, max(previous, self._start), "unsigned tail older than the time limit")

    def _finish_heartbeats(self) -> bool:
        """(7b) Report silences; True when the newest checkpoint is already reported as too old at ``now``."""
        # A running writer signs at least every heartbeat_s, even with nothing new. A longer silence
        # means checkpoints were deleted (with the records they signed, if the tree was then grown
        # again from the cut), or the writer stopped without closing. Only a checkpoint the writer
        # signed at shutdown may be followed by silence. Retention checkpoints are signed by
        # ``audit prune``, not by the writer, so they are no heartbeat.
        limit = self._options.max_seconds_between_checkpoints
        dated = sorted(
            ((c.signed_at, c) for c in self._checkpoints if c.signed_at is not None and c.retention is None),
            key=lambda pair: pair[0],
        )
        waited = {p.position for p in self.problems if p.kind is K.CHECKPOINT_GAP}  # the same silence, seen by a record
        for (before_at, before), (after_at, _) in pairwise(dated):
            silence = (after_at - before_at).total_seconds()
            if silence > limit and not before.closed and before.checkpoint.tree_size not in waited:
                self._report(
                    K.CHECKPOINT_GAP,
                    before.checkpoint.tree_size,
                    f"no checkpoint for {silence:.0f} s after this one (limit {limit:g} s) and it was not signed "
                    "at shutdown: checkpoints were deleted, or the writer stopped signing",
                )
        now = self._options.now
        if now is None or not dated:
            return False
        newest_at, newest = dated[-1]
        age = (now - newest_at).total_seconds()
        if age <= limit or newest.closed:
            return False
        self._report(
            K.CHECKPOINT_GAP,
            newest.checkpoint.tree_size,
            f"the newest checkpoint is {age:.0f} s old at {now.isoformat()} (limit {limit:g} s) and was not signed "
            "at shutdown: the newest records and their checkpoints were deleted, or the writer stopped signing",
        )
        return True

    def unsigned(self) -> SeqRange | None:
        """The records after the newest signed checkpoint (or the trusted one), after ``finish()``."""
        sizes = [c.checkpoint.tree_size for c in self._checkpoints]
        if self._trusted is not None:
            sizes.append(self._trusted.checkpoint.tree_size)
        first = max([self._start, *sizes])
        return SeqRange(first, self._next - first) if self._next > first else None
