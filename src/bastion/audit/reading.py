"""Read-only access to a stored audit log for auditors and operators: verify, prove, show, follow.

Owns paging checkpoints and records out of an ``AuditStore``, feeding them to the offline
verifier without loading a log into memory, inclusion proofs (built from stored leaf hashes and,
after a prune, the retention frontier; the ``bastion-inclusion-proof/1`` document and its offline
check), finding one interaction's records, following a log, and reading a time bound a reader
gives into the stored time format. It never writes; the export format is audit/export.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from bastion.audit.checkpoint import (
    parse_checkpoint,
    parse_checkpoint_time,
    parse_retention,
    parse_signed_note,
    verify_note,
)
from bastion.audit.compact import Frontier, root_from_leaf_hashes
from bastion.audit.entry import LogEntry, StoredCheckpoint, StoredTimestamp
from bastion.audit.hashing import hash_children, hash_leaf
from bastion.audit.keys import KeyRing
from bastion.audit.proof import compute_inclusion_proof, verify_inclusion
from bastion.audit.record import render_time
from bastion.errors import BastionError, StorageError, VerificationError
from bastion.storage.base import AuditStore, CheckpointTimestampStore, Store
from bastion.verifier import Options, Report, TimestampTrust, verify_log

PROOF_FORMAT = "bastion-inclusion-proof/1"
PAGE_RECORDS = 1000
CHECKPOINT_PAGE = 1000
DEFAULT_OPTIONS = Options()
MAX_SEQ = 2**53 - 1
"""The largest seq a record can carry: its body holds it as a JSON integer (RFC 8785 allows no larger)."""
FOLLOW_RETRY_MAX_S = 30.0
"""The longest pause between retries while following a store that cannot be read."""
RetryNotice = Callable[[StorageError, float], None]
"""Told the error and the pause in seconds before each retry of a follow."""


class EvidenceFormatError(BastionError):
    """Raised when an export or proof file is not in its documented format (bad input, exit 2)."""


def parse_time_bound(text: str, *, naive_is_utc: bool = False) -> str:
    """Return an RFC 3339 date-time as a bound on stored record times, in their format
    (``render_time``: UTC, milliseconds, ``Z``), where string order is time order.

    An offset is converted to UTC. A fraction finer than a millisecond is rounded up: stored times
    are whole milliseconds, so ``time >= bound`` and ``time < bound`` keep their meaning. A time
    without an offset is refused or, with ``naive_is_utc`` (a form's ``datetime-local``), taken as UTC.

    Raises:
        ValueError: not a date-time, no offset, or outside the years 1..9999 once in UTC.
    """
    try:
        moment = datetime.fromisoformat(text.strip().upper())  # RFC 3339 allows "t" and "z"
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an RFC 3339 date-time such as 2026-07-01T12:00:00Z") from exc
    if moment.tzinfo is None:
        if not naive_is_utc:
            raise ValueError(f"{text!r} has no UTC offset: add Z, or one such as +02:00")
        moment = moment.replace(tzinfo=UTC)
    try:
        moment = moment.astimezone(UTC)
        if sub_ms := moment.microsecond % 1000:
            moment += timedelta(microseconds=1000 - sub_ms)
    except OverflowError as exc:
        raise ValueError(f"{text!r} is out of range") from exc
    return render_time(moment)


def field_of(doc: dict[str, Any], key: str, kind: type) -> Any:
    """Return ``doc[key]`` when it is a ``kind`` (bools are not ints).

    Raises:
        EvidenceFormatError: the field is missing or of another type.
    """
    value = doc.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise EvidenceFormatError(f"{doc.get('type') or 'document'}: {key} must be a {kind.__name__}")
    return value


SizedRow = TypeVar("SizedRow", StoredCheckpoint, StoredTimestamp)


async def _fetch_all_by_size(fetch_page: Callable[[int, int], Awaitable[list[SizedRow]]], start: int) -> list[SizedRow]:
    """Page through rows ordered by tree size where one size may hold several rows.

    A page that ends mid-size is re-read from that size (and grown when one size fills a whole page).
    """
    found: list[SizedRow] = []
    limit = CHECKPOINT_PAGE
    while True:
        page = await fetch_page(start, limit)
        if len(page) < limit:
            return found + page
        last = page[-1].tree_size
        if page[0].tree_size == last:
            limit *= 2
            continue
        found += [row for row in page if row.tree_size < last]
        start, limit = last, CHECKPOINT_PAGE


async def fetch_all_checkpoints(store: AuditStore, origin: str, min_tree_size: int = 0) -> list[StoredCheckpoint]:
    """Return every checkpoint of ``origin`` with ``tree_size >= min_tree_size``, oldest first.

    Heartbeats repeat a size, so pages are cut by size.

    Raises:
        StorageError: the store cannot be read.
    """
    return await _fetch_all_by_size(lambda start, limit: store.fetch_checkpoints(origin, start, limit), min_tree_size)


async def fetch_all_timestamps(
    tokens: CheckpointTimestampStore, origin: str, min_tree_size: int = 0
) -> list[StoredTimestamp]:
    """Return every stored RFC 3161 token of ``origin`` with ``tree_size >= min_tree_size``, by size then TSA.

    Raises:
        StorageError: the store cannot be read.
    """
    return await _fetch_all_by_size(lambda start, limit: tokens.fetch_timestamps(origin, start, limit), min_tree_size)


async def _pages(store: AuditStore, origins: list[str]) -> AsyncGenerator[list[LogEntry], None]:
    for origin in origins:
        page: list[LogEntry] = []
        async for entry in store.stream_entries(origin, 0, PAGE_RECORDS):
            page.append(entry)
            if len(page) == PAGE_RECORDS:
                yield page
                page = []
        if page:
            yield page


def _blocking_entries(
    pages: AsyncGenerator[list[LogEntry], None], loop: asyncio.AbstractEventLoop
) -> Iterator[LogEntry]:
    """Yield entries in a worker thread, fetching each page on the event loop (one hop per page)."""

    async def next_page() -> list[LogEntry] | None:
        return await anext(pages, None)

    while (page := asyncio.run_coroutine_threadsafe(next_page(), loop).result()) is not None:
        yield from page


async def verify_store(
    store: Store,
    origins: list[str],
    keys: KeyRing,
    *,
    trusted: StoredCheckpoint | None = None,
    options: Options = DEFAULT_OPTIONS,
    on_progress: Callable[[int], None] | None = None,
    tsa: TimestampTrust | None = None,
) -> Report:
    """Verify the logs of ``origins`` as stored, streaming records one page at a time.

    The verifier runs in a worker thread so the loop stays free to fetch the next page. With
    ``tsa``, the checkpoints' RFC 3161 tokens are read and verified too.

    Raises:
        StorageError: the store cannot be read (nothing is concluded about the log then).
    """
    checkpoints: list[StoredCheckpoint] = []
    timestamps: list[StoredTimestamp] = []
    for origin in origins:
        checkpoints += await fetch_all_checkpoints(store, origin)
        if tsa is not None:
            timestamps += await fetch_all_timestamps(store.checkpoint_timestamps, origin)
    loop = asyncio.get_running_loop()
    pages = _pages(store, origins)
    try:
        return await asyncio.to_thread(
            verify_log,
            _blocking_entries(pages, loop),
            checkpoints,
            keys,
            trusted,
            on_progress,
            options=options,
            timestamps=timestamps,
            tsa=tsa,
        )
    finally:
        await pages.aclose()


async def count_records(store: AuditStore, origins: list[str]) -> int:
    """Return the sum of the stored tree sizes (an upper bound for a progress bar)."""
    total = 0
    for origin in origins:
        head = await store.fetch_head(origin)
        total += head.tree_size if head is not None else 0
    return total


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Record ``leaf_index`` of ``origin`` is in the tree a signed checkpoint commits to."""

    origin: str
    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    proof: tuple[bytes, ...]
    checkpoint_note: str
    body: bytes | None = None
    """The record itself, so the holder can check that ``leaf_hash`` is its hash."""


class _PrunedTree:
    """MTH(D[start:end]) of a log whose leaves below ``frontier.size`` are pruned, from the frontier's
    perfect subtrees and the stored leaf hashes from ``frontier.size`` on.

    Enough for any inclusion proof of a stored leaf: a subtree on its path left of the cut is one
    of the frontier's subtrees (the cut lies in its sibling), and one across the cut splits into
    frontier subtrees and stored leaves (RFC 6962 §2.1 splits at powers of two, as the frontier does).
    """

    def __init__(self, frontier: Frontier, leaves: list[bytes]) -> None:
        self._cut = frontier.size
        self._leaves = leaves
        self._subtrees: dict[int, tuple[int, bytes]] = {}
        """Frontier subtrees by first leaf: (end, hash); sizes are the set bits of the cut, largest first."""
        start = 0
        for subtree_hash in frontier.hashes:
            end = start + (1 << ((self._cut - start).bit_length() - 1))
            self._subtrees[start] = (end, subtree_hash)
            start = end

    def subtree_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]).

        Raises:
            StorageError: it needs pruned leaves the frontier does not cover.
        """
        if start >= self._cut:
            return root_from_leaf_hashes(self._leaves[start - self._cut : end - self._cut])
        known = self._subtrees.get(start)
        if known is not None and known[0] == end:
            return known[1]
        if end - start < 2:
            raise StorageError(f"leaf {start} is pruned and not covered by the retention frontier")
        split = 1 << ((end - start - 1).bit_length() - 1)
        return hash_children(self.subtree_hash(start, start + split), self.subtree_hash(start + split, end))


async def fetch_retention_frontier(store: AuditStore, origin: str, tree_size: int) -> Frontier | None:
    """Return the frontier a retention checkpoint of ``origin`` at ``tree_size`` carries, or None.

    The note's signature is not checked here: whoever relies on what it builds checks it (the
    verifier, or a proof's holder against the signed root).

    Raises:
        StorageError: the store cannot be read.
    """
    limit = CHECKPOINT_PAGE
    while True:  # heartbeats may repeat a size: read until a page reaches past it
        page = await store.fetch_checkpoints(origin, tree_size, limit)
        at_size = [stored for stored in page if stored.tree_size == tree_size]
        if len(at_size) < limit:
            break
        limit *= 2
    return retention_frontier(at_size, tree_size)


def retention_frontier(checkpoints: Iterable[StoredCheckpoint], tree_size: int) -> Frontier | None:
    """The frontier carried by the first well-formed retention checkpoint at ``tree_size`` among
    ``checkpoints``, or None (signatures unchecked, as in ``fetch_retention_frontier``)."""
    for stored in checkpoints:
        if stored.tree_size != tree_size:
            continue
        try:
            frontier = parse_retention(parse_checkpoint(parse_signed_note(stored.note).text))
        except VerificationError:
            continue
        if frontier is not None:
            return frontier
    return None


async def _first_stored_seq(store: AuditStore, origin: str) -> int | None:
    async with contextlib.aclosing(store.stream_entries(origin, 0, 1)) as entries:  # type: ignore[type-var]
        first = await anext(entries, None)
    return None if first is None else first.seq


async def build_inclusion_proof(store: AuditStore, origin: str, seq: int) -> InclusionProof:
    """Prove record ``seq`` against the newest stored checkpoint of ``origin`` (RFC 9162 §2.1.3.1).

    Subtree hashes are recomputed from the stored leaf hashes and, once records are pruned, from
    the frontier signed in the retention checkpoint at the first stored record. The proof is
    therefore only as good as the store: the holder checks it against the signed note, which is
    what makes it evidence.

    Raises:
        StorageError: no checkpoint covers ``seq``, the record is pruned, or a record or retention
            checkpoint the proof needs is missing.
    """
    checkpoint = await store.fetch_latest_checkpoint(origin)
    if checkpoint is None or not 0 <= seq < checkpoint.tree_size:
        size = checkpoint.tree_size if checkpoint else 0
        raise StorageError(f"no checkpoint of {origin!r} covers seq {seq} (latest tree size {size})")
    first = await _first_stored_seq(store, origin)
    if first is None or seq < first:
        raise StorageError(f"record {origin!r}/{seq} is not stored (pruned?); cannot prove it")
    frontier = await fetch_retention_frontier(store, origin, first) if first else Frontier()
    if frontier is None:
        raise StorageError(f"records of {origin!r} below seq {first} are gone without a retention checkpoint")
    leaves: list[bytes] = []
    body: bytes | None = None
    for start in range(first, checkpoint.tree_size, PAGE_RECORDS):
        page = await store.fetch_entries(origin, start, min(start + PAGE_RECORDS, checkpoint.tree_size))
        if [e.seq for e in page] != list(range(start, start + len(page))):
            break
        leaves += [e.leaf_hash for e in page]
        body = next((e.body for e in page if e.seq == seq), body)
    if first + len(leaves) != checkpoint.tree_size:
        raise StorageError(f"records of {origin!r} from {first} to {checkpoint.tree_size} are not all stored; cannot prove")
    proof = compute_inclusion_proof(seq, checkpoint.tree_size, _PrunedTree(frontier, leaves).subtree_hash)
    return InclusionProof(origin, seq, checkpoint.tree_size, leaves[seq - first], tuple(proof), checkpoint.note, body)


def request_seq_of(entry: LogEntry) -> int | None:
    """Return ``correlation.request_seq`` of a record body, or None."""
    try:
        body: Any = json.loads(entry.body)
    except ValueError:
        return None
    correlation = body.get("correlation") if isinstance(body, dict) else None
    value = correlation.get("request_seq") if isinstance(correlation, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def fetch_interaction(store: AuditStore, origin: str, seq: int, window: int = 1000) -> list[LogEntry]:
    """Return the request record of the interaction ``seq`` belongs to, then every record naming it.

    ``seq`` may be the request or any record with ``request_seq``; linked records (approval,
    response) are searched in the ``window`` records after the request.

    Raises:
        StorageError: no record ``seq`` is stored.
    """
    entry = await store.fetch_entry(origin, seq)
    if entry is None:
        raise StorageError(f"no record {origin!r}/{seq} in the store")
    linked = request_seq_of(entry)
    if linked is not None and linked != seq:
        request = await store.fetch_entry(origin, linked)
        if request is None:
            return [entry]
        entry = request
    later = await store.fetch_entries(origin, entry.seq + 1, entry.seq + 1 + window)
    return [entry, *(e for e in later if request_seq_of(e) == entry.seq)]


async def follow_entries(
    store: AuditStore,
    origin: str,
    start_seq: int,
    poll_s: float,
    follow: bool,
    *,
    on_retry: RetryNotice | None = None,
) -> AsyncIterator[LogEntry]:
    """Yield records from ``start_seq`` on; when ``follow``, keep polling for new seqs every ``poll_s``.

    A failed read after the first pass is retried, not raised: a watcher should outlive a store
    restart or failover. Each pause doubles the one before, from ``poll_s`` up to
    ``FOLLOW_RETRY_MAX_S``, and ``on_retry`` hears of it first.

    Raises:
        StorageError: the store cannot be read on the first pass.
    """
    next_seq = start_seq
    first_pass = True
    pause_s = 0.0
    while True:
        try:
            async for entry in store.stream_entries(origin, next_seq, PAGE_RECORDS):
                next_seq = entry.seq + 1
                yield entry
        except StorageError as exc:
            if first_pass:
                raise
            pause_s = min(FOLLOW_RETRY_MAX_S, max(poll_s, 2 * pause_s))
            if on_retry is not None:
                on_retry(exc, pause_s)
            await asyncio.sleep(pause_s)
            continue
        first_pass, pause_s = False, 0.0
        if not follow:
            return
        await asyncio.sleep(poll_s)


async def fetch_tail_start(store: AuditStore, origin: str, last: int) -> int:
    """Return the seq ``last`` records before the stored head (0 for a short log).

    Raises:
        StorageError: the store holds no log of ``origin`` (or cannot be read).
    """
    head = await store.fetch_head(origin)
    if head is None:
        raise StorageError(f"no log of origin {origin!r} in the store")
    return max(0, head.tree_size - last)


# -- inclusion-proof document --------------------------------------------------------------------------


def render_proof(proof: InclusionProof) -> str:
    """Return the proof as a JSON document (``bastion-inclusion-proof/1``)."""
    doc: dict[str, Any] = {
        "format": PROOF_FORMAT,
        "origin": proof.origin,
        "leaf_index": proof.leaf_index,
        "tree_size": proof.tree_size,
        "leaf_hash": proof.leaf_hash.hex(),
        "proof": [h.hex() for h in proof.proof],
        "checkpoint": proof.checkpoint_note,
    }
    if proof.body is not None:
        doc["body"] = proof.body.decode("utf-8", errors="replace")
    return json.dumps(doc, ensure_ascii=True, indent=2, sort_keys=True) + "\n"


def parse_proof(text: str) -> InclusionProof:
    """Parse a proof document.

    Raises:
        EvidenceFormatError: not JSON, wrong format tag, or a field of the wrong type.
    """
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != PROOF_FORMAT:
            raise EvidenceFormatError(f"not a {PROOF_FORMAT} document")
        body = doc.get("body")
        return InclusionProof(
            field_of(doc, "origin", str),
            field_of(doc, "leaf_index", int),
            field_of(doc, "tree_size", int),
            bytes.fromhex(field_of(doc, "leaf_hash", str)),
            tuple(bytes.fromhex(h) for h in field_of(doc, "proof", list)),
            field_of(doc, "checkpoint", str),
            body.encode("utf-8") if isinstance(body, str) else None,
        )
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise EvidenceFormatError(f"malformed proof document: {exc}") from exc


def verify_proof(proof: InclusionProof, keys: KeyRing) -> None:
    """Check a proof offline: (1) a trusted key signed the checkpoint (in its window); (2) the
    checkpoint is of the proof's origin and size; (3) the body, if present, hashes to the leaf;
    (4) the path leads from the leaf to the signed root (RFC 9162 §2.1.3.2).

    Raises:
        VerificationError: any step fails (MalformedNoteError, BadSignatureError and its
            subclasses, RootMismatchError, MalformedProofError).
    """
    # (1)
    note = parse_signed_note(proof.checkpoint_note)
    checkpoint = parse_checkpoint(note.text)
    verify_note(note, keys, parse_checkpoint_time(checkpoint), origin=checkpoint.origin)
    # (2)
    if (checkpoint.origin, checkpoint.tree_size) != (proof.origin, proof.tree_size):
        raise VerificationError(
            f"checkpoint is for {checkpoint.origin!r} at size {checkpoint.tree_size}, "
            f"the proof claims {proof.origin!r} at size {proof.tree_size}"
        )
    # (3)
    if proof.body is not None and hash_leaf(proof.body) != proof.leaf_hash:
        raise VerificationError("the record body does not hash to the proof's leaf hash")
    # (4)
    verify_inclusion(proof.leaf_hash, proof.leaf_index, proof.tree_size, proof.proof, checkpoint.root_hash)
