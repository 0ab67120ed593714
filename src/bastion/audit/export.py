"""Writing the JSON Lines export of a log (``bastion-audit-export/1``), and its line vocabulary.

An export holds records, checkpoints, their RFC 3161 time-stamp tokens, when it starts mid-log
the frontier before its first record, and one closing ``origin`` line per origin that counts
its lines. This module owns that format (the format tag, the line types, the counts) and
writing it from a store; reading and verifying a file is audit/export_verify.py's, reading the
store is audit/reading.py's, and deciding what the log evidence means is the verifier's.
"""

from __future__ import annotations

import base64
import contextlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum, auto
from typing import IO, Any

from bastion.audit.compact import Frontier
from bastion.audit.entry import LogEntry, StoredCheckpoint
from bastion.audit.reading import PAGE_RECORDS, fetch_all_checkpoints, fetch_all_timestamps, retention_frontier
from bastion.audit.record import render_time
from bastion.errors import StorageError
from bastion.storage.base import Store

EXPORT_FORMAT = "bastion-audit-export/1"


class LineType(StrEnum):
    """The ``type`` of an export line, its lower-cased name: one header first, then the others."""

    HEADER = auto()
    ENTRY = auto()
    CHECKPOINT = auto()
    PREFIX = auto()
    TIMESTAMP = auto()
    ORIGIN = auto()


@dataclass(frozen=True, slots=True)
class ExportWindow:
    """Which records to export: record times in [time_from, time_to); None leaves that end open."""

    time_from: str | None = None
    time_to: str | None = None


@dataclass(slots=True)
class LineCounts:
    """How many record, checkpoint and time-stamp lines one origin has in an export."""

    records: int = 0
    checkpoints: int = 0
    timestamps: int = 0

    def render(self) -> str:
        return f"{self.records} records, {self.checkpoints} checkpoints, {self.timestamps} time-stamp tokens"


@dataclass(slots=True)
class ExportStats:
    """What one export wrote."""

    records: int = 0
    checkpoints: int = 0
    timestamps: int = 0
    origins: list[str] = field(default_factory=list)
    unsigned: int = 0
    """Records inside the window left out because no checkpoint signs them yet."""


def _line(out: IO[str], doc: dict[str, Any]) -> None:
    out.write(json.dumps(doc, ensure_ascii=True, separators=(",", ":"), sort_keys=True) + "\n")


def _require_writer_types(entry: LogEntry) -> None:
    """Refuse a row whose columns hold another type than the writer stores (e.g. SQLite
    ``CAST(body AS TEXT)``): an export cannot carry a column's type, so copying the row would
    present it as intact. ``bastion audit verify --store`` reports such a row.

    Raises:
        StorageError: a column of ``entry`` has another type.
    """
    if not (
        isinstance(entry.body, bytes)
        and isinstance(entry.leaf_hash, bytes)
        and isinstance(entry.time, str)
        and isinstance(entry.kind, str)
    ):
        raise StorageError(
            f"record {entry.origin!r}/{entry.seq} has columns of another type than the writer stores (the row was "
            "rewritten outside the writer); 'bastion audit verify --store' reports it"
        )


def _entry_doc(entry: LogEntry) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": LineType.ENTRY,
        "origin": entry.origin,
        "seq": entry.seq,
        "time": entry.time,
        "kind": entry.kind,
        "leaf_hash": entry.leaf_hash.hex(),
    }
    try:
        doc["body"] = entry.body.decode("utf-8")
    except UnicodeDecodeError:
        doc["body_b64"] = base64.b64encode(entry.body).decode("ascii")
    return doc


def _start_frontier(checkpoints: list[StoredCheckpoint], first_seq: int) -> Frontier | None:
    """The frontier before ``first_seq``: empty at 0, else the retention frontier signed at that size."""
    return Frontier() if first_seq == 0 else retention_frontier(checkpoints, first_seq)


async def write_export(store: Store, origins: list[str], window: ExportWindow, out: IO[str]) -> ExportStats:
    """Write the records of ``origins`` inside ``window``, the checkpoints that sign them and their tokens.

    The record range is extended forward to the next checkpoint, and records after the newest
    checkpoint are left out (counted in ``ExportStats.unsigned``), so every exported record is
    covered by a signature. When the window skips records at the start, a ``prefix`` line carries
    the frontier of their stored leaf hashes; it is not trusted, only the signed roots can confirm
    it. Each origin ends with an ``origin`` line counting its lines, also when the window holds
    none of its records, so a verifier can tell an empty window from removed lines.

    Raises:
        StorageError: the store cannot be read, or a record's columns are not what the writer stores.
    """
    stats = ExportStats(origins=list(origins))
    _line(
        out,
        {
            "type": LineType.HEADER,
            "format": EXPORT_FORMAT,
            "exported_at": render_time(datetime.now(UTC)),
            "origins": origins,
            "from": window.time_from,
            "to": window.time_to,
        },
    )
    for origin in origins:
        counts = await _export_origin(store, origin, window, out, stats)
        _line(out, {"type": LineType.ORIGIN, "origin": origin, **asdict(counts)})
        stats.records += counts.records
        stats.checkpoints += counts.checkpoints
        stats.timestamps += counts.timestamps
    return stats


async def _export_origin(
    store: Store, origin: str, window: ExportWindow, out: IO[str], stats: ExportStats
) -> LineCounts:
    counts = LineCounts()
    checkpoints = await fetch_all_checkpoints(store, origin)
    sizes = sorted({c.tree_size for c in checkpoints})
    signed_end = sizes[-1] if sizes else 0  # records from here on are signed by nothing yet
    before: Frontier | None = None  # frontier over the records the window skips
    skipped = started = False
    low, end = 0, None
    async with contextlib.aclosing(store.stream_entries(origin, 0, PAGE_RECORDS)) as entries:  # type: ignore[type-var]
        async for entry in entries:
            _require_writer_types(entry)
            if not started and window.time_from is not None and entry.time < window.time_from:
                if not skipped:
                    before, skipped = _start_frontier(checkpoints, entry.seq), True
                if before is not None and before.size == entry.seq:
                    before.append(entry.leaf_hash)
                else:
                    before = None  # a gap: the verifier will report it, the export cannot bridge it
                continue
            if end is None and window.time_to is not None and entry.time >= window.time_to:
                end = next((s for s in sizes if s >= entry.seq), entry.seq)
            if end is not None and entry.seq >= end:
                break
            if entry.seq >= signed_end:
                stats.unsigned += 1
                continue
            if not started:
                started = True
                if skipped:
                    low = entry.seq
                    if before is not None and before.size == entry.seq:
                        _line(
                            out,
                            {
                                "type": LineType.PREFIX,
                                "origin": origin,
                                "tree_size": before.size,
                                "hashes": [h.hex() for h in before.hashes],
                            },
                        )
            _line(out, _entry_doc(entry))
            counts.records += 1
    if not started:
        return counts  # the window holds no signed record of this origin
    for stored in checkpoints:
        if low <= stored.tree_size and (end is None or stored.tree_size <= end):
            _line(
                out,
                {
                    "type": LineType.CHECKPOINT,
                    "origin": stored.origin,
                    "tree_size": stored.tree_size,
                    "root_hash": stored.root_hash.hex(),
                    "note": stored.note,
                    "time": stored.time,
                },
            )
            counts.checkpoints += 1
    for stamp in await fetch_all_timestamps(store.checkpoint_timestamps, origin, low):
        if end is None or stamp.tree_size <= end:
            _line(
                out,
                {
                    "type": LineType.TIMESTAMP,
                    "origin": stamp.origin,
                    "tree_size": stamp.tree_size,
                    "tsa": stamp.tsa,
                    "token": base64.b64encode(stamp.token).decode("ascii"),
                    "gen_time": stamp.gen_time,
                },
            )
            counts.timestamps += 1
    return counts
