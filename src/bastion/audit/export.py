"""Portable evidence: the JSON Lines export of a log and the inclusion-proof document.

Owns both file formats (write, read, verify). An export holds records, checkpoints and, when it
starts mid-log, the frontier before its first record; ``verify_export`` hands it to the offline
verifier. Reading the store is audit/reading.py's; deciding what the evidence means is the verifier's.
"""

from __future__ import annotations

import base64
import contextlib
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from bastion.audit.checkpoint import (
    Checkpoint,
    parse_checkpoint,
    parse_checkpoint_time,
    parse_retention,
    parse_signed_note,
    render_retention_extension,
    sign_checkpoint,
    verify_note,
)
from bastion.audit.compact import Frontier, MalformedFrontierError
from bastion.audit.entry import LogEntry, StoredCheckpoint
from bastion.audit.hashing import hash_leaf
from bastion.audit.keys import KeyRing, generate_signing_key
from bastion.audit.proof import verify_inclusion
from bastion.audit.reading import PAGE_RECORDS, InclusionProof, fetch_all_checkpoints
from bastion.audit.record import render_time
from bastion.errors import BastionError, VerificationError
from bastion.storage.base import AuditStore
from bastion.verifier import Options, Problem, ProblemKind, Report, verify_log

EXPORT_FORMAT = "bastion-audit-export/1"
PROOF_FORMAT = "bastion-inclusion-proof/1"


class ExportFormatError(BastionError):
    """Raised when an export or proof file is not in its documented format (bad input, exit 2)."""


# -- writing ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportWindow:
    """Which records to export: record times in [time_from, time_to); None leaves that end open."""

    time_from: str | None = None
    time_to: str | None = None


@dataclass(slots=True)
class ExportStats:
    """What one export wrote."""

    records: int = 0
    checkpoints: int = 0
    origins: list[str] = field(default_factory=list)


def _line(out: IO[str], doc: dict[str, Any]) -> None:
    out.write(json.dumps(doc, ensure_ascii=True, separators=(",", ":"), sort_keys=True) + "\n")


def _entry_doc(entry: LogEntry) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": "entry", "origin": entry.origin, "seq": entry.seq, "time": entry.time,
                           "kind": entry.kind, "leaf_hash": entry.leaf_hash.hex()}
    try:
        doc["body"] = entry.body.decode("utf-8")
    except UnicodeDecodeError:
        doc["body_b64"] = base64.b64encode(entry.body).decode("ascii")
    return doc


def _start_frontier(checkpoints: list[StoredCheckpoint], first_seq: int) -> Frontier | None:
    """The frontier before ``first_seq``: empty at 0, else the retention frontier signed at that size."""
    if first_seq == 0:
        return Frontier()
    for stored in checkpoints:
        if stored.tree_size == first_seq:
            try:
                frontier = parse_retention(parse_checkpoint(parse_signed_note(stored.note).text))
            except VerificationError:
                continue
            if frontier is not None:
                return frontier
    return None


async def write_export(store: AuditStore, origins: list[str], window: ExportWindow, out: IO[str]) -> ExportStats:
    """Write the records of ``origins`` inside ``window`` and the checkpoints that sign them.

    The record range is extended forward to the next checkpoint so every exported record is
    covered by a signature. When the window skips records at the start, a ``prefix`` line carries
    the frontier of their stored leaf hashes; it is not trusted, only the signed roots can confirm it.

    Raises:
        StorageError: the store cannot be read.
    """
    stats = ExportStats(origins=list(origins))
    _line(out, {"type": "header", "format": EXPORT_FORMAT, "exported_at": render_time(datetime.now(UTC)),
                "origins": origins, "from": window.time_from, "to": window.time_to})
    for origin in origins:
        await _export_origin(store, origin, window, out, stats)
    return stats


async def _export_origin(store: AuditStore, origin: str, window: ExportWindow, out: IO[str], stats: ExportStats) -> None:
    checkpoints = await fetch_all_checkpoints(store, origin)
    sizes = sorted({c.tree_size for c in checkpoints})
    before: Frontier | None = None  # frontier over the records the window skips
    skipped = started = False
    low, end = 0, None
    async with contextlib.aclosing(store.stream_entries(origin, 0, PAGE_RECORDS)) as entries:  # type: ignore[type-var]
        async for entry in entries:
            if not started and window.time_from is not None and entry.time < window.time_from:
                if not skipped:
                    before, skipped = _start_frontier(checkpoints, entry.seq), True
                if before is not None and before.size == entry.seq:
                    before.append(entry.leaf_hash)
                else:
                    before = None  # a gap: the verifier will report it, the export cannot bridge it
                continue
            if not started:
                started = True
                if skipped:
                    low = entry.seq
                    if before is not None and before.size == entry.seq:
                        _line(out, {"type": "prefix", "origin": origin, "tree_size": before.size,
                                    "hashes": [h.hex() for h in before.hashes]})
            if end is None and window.time_to is not None and entry.time >= window.time_to:
                end = next((s for s in sizes if s >= entry.seq), entry.seq)
            if end is not None and entry.seq >= end:
                break
            _line(out, _entry_doc(entry))
            stats.records += 1
    for stored in checkpoints:
        if low <= stored.tree_size and (end is None or stored.tree_size <= end):
            _line(out, {"type": "checkpoint", "origin": stored.origin, "tree_size": stored.tree_size,
                        "root_hash": stored.root_hash.hex(), "note": stored.note, "time": stored.time})
            stats.checkpoints += 1
