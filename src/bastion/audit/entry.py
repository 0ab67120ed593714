"""The stored shapes of the audit log: one leaf (record), one signed checkpoint, one checkpoint time-stamp.

Shared by the writer (audit/log.py), the timestamper (audit/timestamping.py), the stores
(storage/*) and the offline verifier; nothing here does I/O or hashing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One record of one origin's log; ``seq`` is its 0-based leaf index, gap-free."""

    origin: str
    seq: int
    time: str
    """RFC 3339 UTC with milliseconds, copied out of ``body`` for indexing."""
    kind: str
    body: bytes
    """The record as RFC 8785 canonical JSON; the leaf hash is computed over exactly these bytes."""
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A signed checkpoint of one origin's log at ``tree_size`` leaves."""

    origin: str
    tree_size: int
    root_hash: bytes
    note: str
    """The C2SP signed-note text (checkpoint body, blank line, signature lines)."""
    time: str


@dataclass(frozen=True, slots=True)
class StoredTimestamp:
    """An RFC 3161 token a TSA signed over one checkpoint's note (audit/timestamp_token.py)."""

    origin: str
    tree_size: int
    tsa: str
    """Which TSA issued it (its URL); a label for operators, the verifier trusts only the signature."""
    token: bytes
    """The DER ``TimeStampToken`` (CMS SignedData) exactly as the TSA sent it."""
    gen_time: str
    """The token's genTime as RFC 3339 UTC, copied out for listing; the token is what counts."""
