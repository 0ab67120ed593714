"""Inclusion proofs of stored records: build one, write and read its document, check it offline.

Owns ``build_inclusion_proof`` (RFC 9162 §2.1.3.1 against the newest stored checkpoint, from the
stored leaf hashes and, after a prune, the frontier of the retention checkpoint at the first
stored record), the ``bastion-inclusion-proof/1`` document and ``verify_proof``. Planning and
checking the audit path itself is audit/proof.py's; paging the store is audit/reading.py's.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from bastion.audit.checkpoint import parse_checkpoint, parse_checkpoint_time, parse_signed_note, verify_note
from bastion.audit.compact import Frontier, root_from_leaf_hashes
from bastion.audit.evidence import EvidenceFormatError, field_of
from bastion.audit.hashing import hash_children, hash_leaf
from bastion.audit.keys import KeyRing
from bastion.audit.proof import compute_inclusion_proof, verify_inclusion
from bastion.audit.reading import PAGE_RECORDS, fetch_retention_frontier
from bastion.errors import StorageError, VerificationError
from bastion.storage.base import AuditStore


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


# -- inclusion-proof document --------------------------------------------------------------------------

PROOF_FORMAT = "bastion-inclusion-proof/1"


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
