"""The async store interface the audit log writes through, and the shapes it exchanges.

Owns the ``AuditStore`` protocol, the per-origin ``LogHead`` (tree size + Merkle frontier, written
in the same transaction as the records it covers), search queries and the columns a record is
indexed by (and how verify reads them: ``IndexedEntry``, ``StrayIndexRow``), and how a store may
be opened (``OpenMode``). It knows nothing about SQL;
``storage/sqlite.py`` and ``storage/postgres.py`` implement it.
Later concerns (approvals, API keys, tool pins, checkpoint time-stamps) add their own protocols plus migrations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import orjson

from bastion.audit.entry import LogEntry, StoredCheckpoint, StoredTimestamp
from bastion.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from bastion.approval.store import ApprovalStore
    from bastion.identity.apikey import ApiKeyStore
    from bastion.storage.pins import ToolPinStore

HASH_BYTES = 32
"""Every leaf and frontier hash is a SHA-256 digest (RFC 6962 §2.1)."""
MAX_SEARCH_LIMIT = 10_000
"""The most records one search returns; ``RecordQuery.after`` pages through more."""
LOWEST_SEQ = -(2**63)
"""The lowest seq a row can be stored at (a 64-bit integer column). The writer stores none below
0, but searches would find such a row: the stream for verify starts here."""


class OpenMode(Enum):
    """What opening a store may do to it."""

    CREATE = "create"
    """Create the database (SQLite file, PostgreSQL schema) if missing and apply pending migrations:
    the gateway, and the commands that set a store up (``keys``, ``tools``)."""
    EXISTING = "existing"
    """Read and write a store that exists at this code's schema version; create and migrate
    nothing: the CLI's reading commands, which also append the record of their read."""
    READ_ONLY = "read_only"
    """As ``EXISTING``, and write nothing at all (read-only connections or transactions), so
    read-only credentials suffice: ``verify``."""


class UnpreparedStoreError(ConfigError):
    """Raised when a store opened without ``OpenMode.CREATE`` does not exist (no SQLite file, no
    PostgreSQL schema), holds no Bastion schema, or one older than this code needs."""


@dataclass(frozen=True, slots=True)
class LogHead:
    """Where one origin's log stands: ``tree_size`` leaves and the frontier that roots them.

    Stored alongside the records because pruning removes the leaves the frontier was built from.
    """

    origin: str
    tree_size: int
    frontier: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class AppendBatch:
    """Records and checkpoints of one origin, committed together or not at all.

    Preconditions: ``entries`` are contiguous, ``entries[0].seq == head.tree_size - len(entries)``
    and that is the tree size currently stored for the origin (0 if none); checkpoints have
    ``tree_size <= head.tree_size``.
    """

    head: LogHead
    entries: tuple[LogEntry, ...] = ()
    checkpoints: tuple[StoredCheckpoint, ...] = ()
    columns: tuple[SearchColumns, ...] = ()
    """Each entry's search columns when the writer already has them (from the dict it encoded);
    empty: the store extracts them from the bodies."""

    @property
    def previous_size(self) -> int:
        """The tree size the store must hold before this batch (optimistic concurrency check)."""
        return self.head.tree_size - len(self.entries)


@dataclass(frozen=True, slots=True)
class SearchCursor:
    """Where a page of search results ended: its last record's time, origin and seq."""

    time: str
    origin: str
    seq: int


@dataclass(frozen=True, slots=True)
class RecordQuery:
    """Search filters; every field given must match.

    Results come newest first, records of one time by origin, then by seq from the highest. The
    times are bounds in the stored format (``audit/record.py`` ``render_time``: UTC, milliseconds,
    ``Z``; ``audit/reading.py`` ``parse_time_bound`` makes one), compared as strings:
    ``time_from`` inclusive, ``time_to`` exclusive. ``after`` continues an earlier search from
    past its last result; ``limit`` is 1..``MAX_SEARCH_LIMIT``.
    """

    origin: str | None = None
    subject: str | None = None
    tool: str | None = None
    session_id: str | None = None
    outcome: str | None = None
    kind: str | None = None
    time_from: str | None = None
    time_to: str | None = None
    limit: int = 100
    after: SearchCursor | None = None


class SearchColumns(NamedTuple):
    """The fields of a record body that the stores copy into indexed columns.

    A named tuple, not a dataclass: one is built per record written, and per record verified.
    """

    subject: str | None
    tool: str | None
    session_id: str | None
    outcome: str | None

    @classmethod
    def from_body(cls, body: bytes) -> SearchColumns:
        """Extract the indexed fields from a canonical record body (see ``audit/record.py``).

        Raises:
            StorageError: the body is not a JSON object.
        """
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise StorageError("record body is not JSON") from exc
        if not isinstance(doc, dict):
            raise StorageError("record body is not a JSON object")
        return cls.from_doc(doc)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> SearchColumns:
        """Extract the indexed fields from a record body before it is encoded."""
        outcome = doc.get("outcome")
        return cls(
            _text(doc.get("who"), "subject"),
            _text(doc.get("what"), "name"),
            _text(doc.get("correlation"), "session_id"),
            outcome if isinstance(outcome, str) else None,
        )


def _text(section: object, key: str) -> str | None:
    value = section.get(key) if isinstance(section, dict) else None
    return value if isinstance(value, str) else None


class SearchIndexRow(NamedTuple):
    """A row searches match a record by, stored apart from the record (SQLite ``search_index``), as found."""

    time: Any
    kind: Any
    subject: Any
    tool: Any
    session_id: Any
    outcome: Any


class IndexedEntry(NamedTuple):
    """A stored record with what searches match it by: what ``bastion audit verify`` compares with its body.

    Stored values are passed on as found, of whatever type, for the verifier to judge.
    """

    entry: LogEntry
    columns: SearchColumns
    """The search columns of the record's own row."""
    index_row: SearchIndexRow | None
    """The record's row in a separate search index (SQLite ``search_index``) where it is not a copy
    of the record's own row (time, kind and search columns); None where it is one, or there is none.
    The store compares them, so that the verifier reads the copy only where it differs."""
    hidden: bool
    """Searches find this record only through a separate index row, and it has none (SQLite: the
    record is filed, at or below its origin's watermark, or its origin has no head row)."""


class StrayIndexRow(NamedTuple):
    """A search index row (SQLite ``search_index``) at a seq where its origin has no stored record.

    Searches drop it and read on past it (``sqlite_search.search``), but it is a trace of a deleted
    record or a forgery, and enough of them slow every search that reads past them.
    """

    origin: str
    seq: int


VerifiedRow = IndexedEntry | StrayIndexRow
"""What ``AuditStore.stream_indexed_entries`` yields pages of."""


def check_batch(batch: AppendBatch) -> None:
    """Reject a malformed batch before it reaches SQL.

    Raises:
        StorageError: entries are not contiguous, belong to another origin or a checkpoint is ahead.
    """
    origin = batch.head.origin
    for offset, entry in enumerate(batch.entries):
        if entry.origin != origin or entry.seq != batch.previous_size + offset:
            raise StorageError(f"batch entry {entry.origin}/{entry.seq} out of order")
        if len(entry.leaf_hash) != HASH_BYTES:
            raise StorageError("leaf hash must be 32 bytes")
    if batch.columns and len(batch.columns) != len(batch.entries):
        raise StorageError("batch carries search columns for some entries only")
    for cp in batch.checkpoints:
        if cp.origin != origin or cp.tree_size > batch.head.tree_size:
            raise StorageError(f"checkpoint {cp.origin}/{cp.tree_size} is ahead of the batch")


def pack_frontier(frontier: Sequence[bytes]) -> bytes:
    """Concatenate frontier hashes for one BLOB/BYTEA column."""
    return b"".join(frontier)


def unpack_frontier(blob: bytes) -> tuple[bytes, ...]:
    """Split a stored frontier back into its 32-byte hashes.

    Raises:
        StorageError: the blob is not a whole number of hashes.
    """
    if len(blob) % HASH_BYTES:
        raise StorageError("stored frontier is corrupt")
    return tuple(blob[i : i + HASH_BYTES] for i in range(0, len(blob), HASH_BYTES))


class AuditStore(Protocol):
    """Durable storage for audit records and checkpoints, one append-only log per origin.

    Every method raises ``StorageError`` when the store cannot answer; callers fail closed.
    """

    def append_batch(self, batch: AppendBatch) -> Awaitable[None]:
        """Queue the batch's records, checkpoints and new head for one transaction, now; the result
        completes when they are durable.

        A writer may queue the next batch of an origin before the last one has committed (it then
        expects the tree size the last one leaves): the store commits them in the order queued,
        may merge them into one transaction, and fails a batch whose expected size is not there.

        Raises:
            StorageError: from the call or from awaiting its result: the batch is malformed, the
                write failed, or the stored tree size is not ``batch.previous_size``.
        """

    async def fetch_origins(self) -> list[str]:
        """Every origin with a head, a record or a checkpoint in this store (on SQLite also a
        ``search_index`` row), sorted: what verify walks when no origin is named.

        Not the heads alone: a log whose head row is lost must still be listed, and verified; nor
        the logs alone: index rows filed under an origin that has nothing else must be verified too.
        """
        ...

    async def fetch_head(self, origin: str) -> LogHead | None:
        """Return the origin's head, or None if it has never been written."""

    async def fetch_entry(self, origin: str, seq: int) -> LogEntry | None:
        """Return one record, or None if absent (never written or pruned)."""

    async def fetch_entries(self, origin: str, start_seq: int, end_seq: int) -> list[LogEntry]:
        """Return the stored records with ``start_seq <= seq < end_seq`` in seq order."""

    def stream_entries(self, origin: str, start_seq: int = 0, batch_size: int = 1000) -> AsyncIterator[LogEntry]:
        """Yield every stored record from ``start_seq`` on in seq order, fetching ``batch_size`` at a time."""

    def stream_indexed_entries(self, origin: str, batch_size: int = 1000) -> AsyncIterator[list[VerifiedRow]]:
        """Yield every stored record of ``origin`` (from ``LOWEST_SEQ`` on) in seq order, with what
        searches match it by, one page of ``batch_size`` records (``IndexedEntry``) at a time: for
        verify, which may hold read-only credentials.

        After its records, a page holds the ``StrayIndexRow`` of its seq range (the first page's
        from ``LOWEST_SEQ``, the last page's on past its last record), in seq order. A page holds
        at most ``batch_size`` of those too: where its range holds more, the range ends at the
        last one the page holds, so the page has fewer records (none, maybe) and the next page
        goes on from there. The pages' ranges follow each other without overlap. Each page is
        read in one snapshot, so it never shows a record without the index row that was filed or
        pruned together with it.

        Raises:
            StorageError: the store cannot be read, or ``batch_size`` is not positive.
        """

    async def fetch_checkpoints(
        self, origin: str, min_tree_size: int = 0, limit: int = 1000
    ) -> list[StoredCheckpoint]:
        """Return checkpoints with ``tree_size >= min_tree_size``, oldest first."""

    async def fetch_latest_checkpoint(self, origin: str) -> StoredCheckpoint | None:
        """Return the newest checkpoint of the origin, or None."""

    async def search_entries(self, query: RecordQuery) -> list[LogEntry]:
        """Return records matching every filter of ``query``, newest first, at most ``query.limit``.

        Raises:
            StorageError: the store cannot be read, or ``query.limit`` is outside 1..``MAX_SEARCH_LIMIT``.
        """

    async def prune_entries(self, origin: str, tree_size: int) -> int:
        """Delete records with ``seq < tree_size``; a checkpoint at ``tree_size`` must be stored.

        Returns the number of records deleted.

        Raises:
            StorageError: no checkpoint of the origin has exactly ``tree_size`` leaves.
        """

    async def aclose(self) -> None:
        """Finish pending writes and release connections and threads."""


class CheckpointTimestampStore(Protocol):
    """RFC 3161 tokens over stored checkpoints (audit/timestamping.py): at most one per origin, tree size and TSA.

    Every method raises ``StorageError`` when the store cannot answer.
    """

    async def store_timestamp(self, stamp: StoredTimestamp) -> None:
        """Keep a token; an earlier one is never replaced.

        Raises:
            StorageError: a token of this origin, tree size and TSA is stored already, or the write failed.
        """

    async def fetch_timestamps(self, origin: str, min_tree_size: int = 0, limit: int = 1000) -> list[StoredTimestamp]:
        """Return tokens with ``tree_size >= min_tree_size``, by tree size then TSA."""
        ...

    async def fetch_latest_timestamp(self, origin: str, tsa: str) -> StoredTimestamp | None:
        """Return the token of the largest tree size ``tsa`` stamped, or None."""


class Store(AuditStore, Protocol):
    """What ``open_store`` opens: the audit log plus one object per other concern on the same connections."""

    @property
    def api_keys(self) -> ApiKeyStore:
        """API key records (``identity/apikey.py``)."""
        ...

    @property
    def tool_pins(self) -> ToolPinStore:
        """Tool-definition pins and pending changes (``storage/pins.py``)."""
        ...

    @property
    def approvals(self) -> ApprovalStore:
        """Held calls awaiting human approval and time-box grants (``approval/store.py``)."""
        ...

    @property
    def checkpoint_timestamps(self) -> CheckpointTimestampStore:
        """RFC 3161 tokens over checkpoints (``audit/timestamping.py``)."""
        ...


async def iterate_pages(
    fetch_page: Callable[[int, int], Awaitable[list[LogEntry]]], start_seq: int, batch_size: int
) -> AsyncIterator[LogEntry]:
    """Yield entries page by page; ``fetch_page(from_seq, limit)`` returns up to ``limit`` rows with seq >= from_seq.

    Keyset pagination: no cursor or transaction is held while the consumer works on a page.
    """
    if batch_size < 1:
        raise StorageError("batch_size must be positive")
    next_seq = start_seq
    while True:
        page = await fetch_page(next_seq, batch_size)
        for entry in page:
            yield entry
        if len(page) < batch_size:
            return
        next_seq = page[-1].seq + 1
