"""The JSON Lines export of a log (``bastion-audit-export/1``): write, read and verify offline.

An export holds records, checkpoints, their RFC 3161 time-stamp tokens and, when it starts
mid-log, the frontier before its first record; ``verify_export`` hands it to the offline
verifier. Reading the store and the proof document are audit/reading.py's; deciding what the
evidence means is the verifier's.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from bastion.audit.checkpoint import (
    Checkpoint,
    parse_checkpoint,
    parse_retention,
    parse_signed_note,
    render_retention_extension,
    sign_checkpoint,
)
from bastion.audit.compact import Frontier, MalformedFrontierError
from bastion.audit.entry import LogEntry, StoredCheckpoint, StoredTimestamp
from bastion.audit.keys import KeyRing, VerifierKey, generate_signing_key
from bastion.audit.reading import (
    DEFAULT_OPTIONS,
    PAGE_RECORDS,
    EvidenceFormatError,
    fetch_all_checkpoints,
    fetch_all_timestamps,
    field_of,
)
from bastion.audit.record import render_time
from bastion.errors import VerificationError
from bastion.storage.base import Store
from bastion.verifier import Options, Problem, ProblemKind, Report, TimestampTrust, verify_log

EXPORT_FORMAT = "bastion-audit-export/1"
PREFIX_KEY_NAME = "bastion-export-prefix"
"""Name of the throw-away key that vouches only for an export's own prefix line (see ``verify_export``)."""


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
    timestamps: int = 0
    origins: list[str] = field(default_factory=list)


def _line(out: IO[str], doc: dict[str, Any]) -> None:
    out.write(json.dumps(doc, ensure_ascii=True, separators=(",", ":"), sort_keys=True) + "\n")


def _entry_doc(entry: LogEntry) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": "entry",
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


async def write_export(store: Store, origins: list[str], window: ExportWindow, out: IO[str]) -> ExportStats:
    """Write the records of ``origins`` inside ``window``, the checkpoints that sign them and their tokens.

    The record range is extended forward to the next checkpoint so every exported record is
    covered by a signature. When the window skips records at the start, a ``prefix`` line carries
    the frontier of their stored leaf hashes; it is not trusted, only the signed roots can confirm it.

    Raises:
        StorageError: the store cannot be read.
    """
    stats = ExportStats(origins=list(origins))
    _line(
        out,
        {
            "type": "header",
            "format": EXPORT_FORMAT,
            "exported_at": render_time(datetime.now(UTC)),
            "origins": origins,
            "from": window.time_from,
            "to": window.time_to,
        },
    )
    for origin in origins:
        await _export_origin(store, origin, window, out, stats)
    return stats


async def _export_origin(store: Store, origin: str, window: ExportWindow, out: IO[str], stats: ExportStats) -> None:
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
                        _line(
                            out,
                            {
                                "type": "prefix",
                                "origin": origin,
                                "tree_size": before.size,
                                "hashes": [h.hex() for h in before.hashes],
                            },
                        )
            if end is None and window.time_to is not None and entry.time >= window.time_to:
                end = next((s for s in sizes if s >= entry.seq), entry.seq)
            if end is not None and entry.seq >= end:
                break
            _line(out, _entry_doc(entry))
            stats.records += 1
    if skipped and not started:
        return  # the window holds no record of this origin
    for stored in checkpoints:
        if low <= stored.tree_size and (end is None or stored.tree_size <= end):
            _line(
                out,
                {
                    "type": "checkpoint",
                    "origin": stored.origin,
                    "tree_size": stored.tree_size,
                    "root_hash": stored.root_hash.hex(),
                    "note": stored.note,
                    "time": stored.time,
                },
            )
            stats.checkpoints += 1
    for stamp in await fetch_all_timestamps(store.checkpoint_timestamps, origin, low):
        if end is None or stamp.tree_size <= end:
            _line(
                out,
                {
                    "type": "timestamp",
                    "origin": stamp.origin,
                    "tree_size": stamp.tree_size,
                    "tsa": stamp.tsa,
                    "token": base64.b64encode(stamp.token).decode("ascii"),
                    "gen_time": stamp.gen_time,
                },
            )
            stats.timestamps += 1


# -- reading and verifying an export -------------------------------------------------------------------


def _read_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    doc = json.loads(line)
                except ValueError as exc:
                    raise EvidenceFormatError(f"{path}:{number}: not JSON") from exc
                if not isinstance(doc, dict):
                    raise EvidenceFormatError(f"{path}:{number}: not a JSON object")
                yield number, doc
    except (OSError, UnicodeDecodeError) as exc:
        raise EvidenceFormatError(f"cannot read {path}: {type(exc).__name__}") from exc


def _parse_entry(doc: dict[str, Any]) -> LogEntry:
    if "body" in doc:
        try:
            body = field_of(doc, "body", str).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EvidenceFormatError("entry line: body is not valid Unicode") from exc
    else:
        try:
            body = base64.b64decode(field_of(doc, "body_b64", str), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise EvidenceFormatError("entry line: body_b64 is not base64") from exc
    return LogEntry(
        field_of(doc, "origin", str),
        field_of(doc, "seq", int),
        field_of(doc, "time", str),
        field_of(doc, "kind", str),
        body,
        bytes.fromhex(field_of(doc, "leaf_hash", str)),
    )


def _parse_timestamp(doc: dict[str, Any]) -> StoredTimestamp:
    try:
        token = base64.b64decode(field_of(doc, "token", str), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EvidenceFormatError("timestamp line: token is not base64") from exc
    return StoredTimestamp(
        field_of(doc, "origin", str),
        field_of(doc, "tree_size", int),
        field_of(doc, "tsa", str),
        token,
        field_of(doc, "gen_time", str),
    )


@dataclass(slots=True)
class ExportFile:
    """An export's header, checkpoints, tokens and prefixes; records are streamed by ``entries()``."""

    path: Path
    origins: list[str]
    checkpoints: list[StoredCheckpoint]
    prefixes: dict[str, Frontier]
    timestamps: list[StoredTimestamp] = field(default_factory=list)

    def entries(self, origins: set[str]) -> Iterator[LogEntry]:
        """Yield the records of ``origins`` in file order (a second pass over the file).

        Raises:
            EvidenceFormatError: a record line is malformed.
        """
        for number, doc in _read_lines(self.path):
            if doc.get("type") == "entry" and doc.get("origin") in origins:
                try:
                    yield _parse_entry(doc)
                except (ValueError, EvidenceFormatError) as exc:
                    raise EvidenceFormatError(f"{self.path}:{number}: {exc}") from exc


def read_export(path: Path) -> ExportFile:
    """Read an export's header, checkpoints, tokens and prefixes (records stay on disk).

    Raises:
        EvidenceFormatError: the file is unreadable, has no header, or a line is malformed.
    """
    export: ExportFile | None = None
    for number, doc in _read_lines(path):
        kind = doc.get("type")
        try:
            if number == 1:
                if kind != "header" or doc.get("format") != EXPORT_FORMAT:
                    raise EvidenceFormatError(f"first line is not a {EXPORT_FORMAT} header")
                origins = field_of(doc, "origins", list)
                export = ExportFile(path, [o for o in origins if isinstance(o, str)], [], {})
            elif export is None or kind not in ("entry", "checkpoint", "prefix", "timestamp"):
                raise EvidenceFormatError(f"unknown line type {kind!r}")
            elif kind == "checkpoint":
                export.checkpoints.append(
                    StoredCheckpoint(
                        field_of(doc, "origin", str),
                        field_of(doc, "tree_size", int),
                        bytes.fromhex(field_of(doc, "root_hash", str)),
                        field_of(doc, "note", str),
                        field_of(doc, "time", str),
                    )
                )
            elif kind == "timestamp":
                export.timestamps.append(_parse_timestamp(doc))
            elif kind == "prefix":
                hashes = tuple(bytes.fromhex(h) for h in field_of(doc, "hashes", list))
                export.prefixes[field_of(doc, "origin", str)] = Frontier(field_of(doc, "tree_size", int), hashes)
        except (ValueError, TypeError, MalformedFrontierError, EvidenceFormatError) as exc:
            raise EvidenceFormatError(f"{path}:{number}: {exc}") from exc
    if export is None:
        raise EvidenceFormatError(f"{path} is empty")
    return export


def verify_export(
    path: Path,
    keys: KeyRing,
    *,
    trusted: StoredCheckpoint | None = None,
    origins: list[str] | None = None,
    options: Options = DEFAULT_OPTIONS,
    tsa: TimestampTrust | None = None,
) -> Report:
    """Verify an export offline, streaming its records from disk (and, with ``tsa``, its tokens).

    A ``prefix`` frontier (an export that starts mid-log) is given to the verifier as a retention
    checkpoint signed by a throw-away key added to the ring for this call only: the verifier then
    continues the tree from it, and only the log's own signed checkpoints after it can confirm it.
    A prefix with no such checkpoint in the file proves nothing and is reported as a root mismatch.

    Raises:
        EvidenceFormatError: the file is not a readable export.
    """
    export = read_export(path)
    missing = [origin for origin in origins or () if origin not in export.origins]
    if missing:  # as for a store: an origin asked for and absent is not an empty log that verifies
        raise EvidenceFormatError(f"the export holds nothing for origin(s) {', '.join(map(repr, missing))}")
    wanted = set(origins or export.origins)
    checkpoints = [c for c in export.checkpoints if c.origin in wanted]
    ring, synthetic = keys, list[StoredCheckpoint]()
    if any(origin in wanted for origin in export.prefixes):
        ring = KeyRing([*keys, *_prefix_keys(export, wanted, synthetic)])
    timestamps = [t for t in export.timestamps if t.origin in wanted]
    report = verify_log(
        export.entries(wanted), [*synthetic, *checkpoints], ring, trusted, options=options, timestamps=timestamps, tsa=tsa
    )
    report.summary.checkpoints -= len(synthetic)
    for origin, frontier in export.prefixes.items():
        closing = [c for c in checkpoints if c.origin == origin and c.tree_size > frontier.size]
        if origin in wanted and not closing:
            report.problems.append(
                Problem(
                    ProblemKind.ROOT_MISMATCH,
                    origin,
                    frontier.size,
                    "the export starts mid-log but no signed checkpoint after its start confirms the prefix frontier",
                )
            )
    return report


def _prefix_keys(export: ExportFile, wanted: set[str], synthetic: list[StoredCheckpoint]) -> list[VerifierKey]:
    keys = []
    for origin, frontier in export.prefixes.items():
        if origin not in wanted:
            continue
        key = generate_signing_key(PREFIX_KEY_NAME)
        body = Checkpoint(origin, frontier.size, frontier.root(), (render_retention_extension(frontier),))
        synthetic.append(StoredCheckpoint(origin, frontier.size, frontier.root(), sign_checkpoint(body, key), ""))
        keys.append(key.public())
    return keys
