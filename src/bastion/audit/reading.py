"""Read-only access to a stored audit log for auditors and operators: verify, prove, show, follow.

Owns paging checkpoints and records out of an ``AuditStore``, feeding them to the offline
verifier without loading a log into memory, inclusion proofs (built from stored leaf hashes, the
``bastion-inclusion-proof/1`` document and its offline check) and finding one interaction's
records. It never writes; the export format is audit/export.py's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from bastion.audit.checkpoint import parse_checkpoint, parse_checkpoint_time, parse_signed_note, verify_note
from bastion.audit.compact import root_from_leaf_hashes
from bastion.audit.entry import LogEntry, StoredCheckpoint, StoredTimestamp
from bastion.audit.hashing import hash_leaf
from bastion.audit.keys import KeyRing
from bastion.audit.proof import compute_inclusion_proof, verify_inclusion
from bastion.errors import BastionError, StorageError, VerificationError
from bastion.storage.base import AuditStore, CheckpointTimestampStore, Store
from bastion.verifier import Options, Report, TimestampTrust, verify_log

PROOF_FORMAT = "bastion-inclusion-proof/1"
PAGE_RECORDS = 1000
CHECKPOINT_PAGE = 1000
DEFAULT_OPTIONS = Options()


class EvidenceFormatError(BastionError):
    """Raised when an export or proof file is not in its documented format (bad input, exit 2)."""


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


async def build_inclusion_proof(store: AuditStore, origin: str, seq: int) -> InclusionProof:
    """Prove record ``seq`` against the newest stored checkpoint of ``origin`` (RFC 9162 §2.1.3.1).

    Subtree hashes are recomputed from the stored leaf hashes, so the proof is only as good as
    the store: the holder checks it against the signed note, which is what makes it evidence.

    Raises:
        StorageError: no checkpoint covers ``seq``, or a record the proof needs is missing (pruned).
    """
    checkpoint = await store.fetch_latest_checkpoint(origin)
    if checkpoint is None or not 0 <= seq < checkpoint.tree_size:
        size = checkpoint.tree_size if checkpoint else 0
        raise StorageError(f"no checkpoint of {origin!r} covers seq {seq} (latest tree size {size})")
    leaves: list[bytes] = []
    body: bytes | None = None
    for start in range(0, checkpoint.tree_size, PAGE_RECORDS):
        page = await store.fetch_entries(origin, start, min(start + PAGE_RECORDS, checkpoint.tree_size))
        if [e.seq for e in page] != list(range(start, start + len(page))):
            break
        leaves += [e.leaf_hash for e in page]
        body = next((e.body for e in page if e.seq == seq), body)
    if len(leaves) != checkpoint.tree_size:
        raise StorageError(f"records of {origin!r} below {checkpoint.tree_size} are missing (pruned?); cannot prove")
    proof = compute_inclusion_proof(seq, checkpoint.tree_size, lambda a, b: root_from_leaf_hashes(leaves[a:b]))
    return InclusionProof(origin, seq, checkpoint.tree_size, leaves[seq], tuple(proof), checkpoint.note, body)


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
    store: AuditStore, origin: str, start_seq: int, poll_s: float, follow: bool
) -> AsyncIterator[LogEntry]:
    """Yield records from ``start_seq`` on; when ``follow``, keep polling for new seqs every ``poll_s``.

    Raises:
        StorageError: the store cannot be read.
    """
    next_seq = start_seq
    while True:
        async for entry in store.stream_entries(origin, next_seq, PAGE_RECORDS):
            next_seq = entry.seq + 1
            yield entry
        if not follow:
            return
        await asyncio.sleep(poll_s)


async def fetch_tail_start(store: AuditStore, origin: str, last: int) -> int:
    """Return the seq ``last`` records before the stored head (0 for a short log)."""
    head = await store.fetch_head(origin)
    return max(0, (head.tree_size if head else 0) - last)


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
    verify_note(note, keys, parse_checkpoint_time(checkpoint))
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
