"""The JSON Lines export of a log (``bastion-audit-export/1``): write, read and verify offline.

An export holds records, checkpoints, their RFC 3161 time-stamp tokens, when it starts mid-log
the frontier before its first record, and one closing ``origin`` line per origin that counts
its lines; ``verify_export`` checks the file against its header and those counts and hands the
rest to the offline verifier. Reading the store and the proof document are audit/reading.py's;
deciding what the log evidence means is the verifier's.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from bastion.audit.compact import Frontier, MalformedFrontierError
from bastion.audit.entry import LogEntry, StoredCheckpoint, StoredTimestamp
from bastion.audit.keys import KeyRing
from bastion.audit.reading import (
    DEFAULT_OPTIONS,
    PAGE_RECORDS,
    EvidenceFormatError,
    fetch_all_checkpoints,
    fetch_all_timestamps,
    field_of,
    retention_frontier,
)
from bastion.audit.record import render_time
from bastion.errors import StorageError
from bastion.storage.base import Store
from bastion.verifier import Options, Problem, ProblemKind, Report, TimestampTrust, verify_log

EXPORT_FORMAT = "bastion-audit-export/1"


# -- writing ---------------------------------------------------------------------------------------


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
            "type": "header",
            "format": EXPORT_FORMAT,
            "exported_at": render_time(datetime.now(UTC)),
            "origins": origins,
            "from": window.time_from,
            "to": window.time_to,
        },
    )
    for origin in origins:
        counts = await _export_origin(store, origin, window, out, stats)
        _line(out, {"type": "origin", "origin": origin, **asdict(counts)})
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
                                "type": "prefix",
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
                    "type": "checkpoint",
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
                    "type": "timestamp",
                    "origin": stamp.origin,
                    "tree_size": stamp.tree_size,
                    "tsa": stamp.tsa,
                    "token": base64.b64encode(stamp.token).decode("ascii"),
                    "gen_time": stamp.gen_time,
                },
            )
            counts.timestamps += 1
    return counts


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
    """An export's header, checkpoints, tokens, prefixes and line counts; records are streamed by ``entries()``."""

    path: Path
    origins: list[str]
    """The origins the header names."""
    checkpoints: list[StoredCheckpoint]
    prefixes: dict[str, Frontier]
    timestamps: list[StoredTimestamp] = field(default_factory=list)
    declared: dict[str, LineCounts] = field(default_factory=dict)
    """Per origin, the counts its closing ``origin`` line states."""
    found: dict[str, LineCounts] = field(default_factory=dict)
    """Per origin, the record, checkpoint and time-stamp lines the file holds."""

    def all_origins(self) -> list[str]:
        """The origins the header names, then every other origin any line belongs to."""
        content = {*self.found, *self.declared, *self.prefixes}
        return list(dict.fromkeys([*self.origins, *sorted(content)]))

    def count_records(self, origins: set[str]) -> int:
        """The record lines of ``origins`` in the file."""
        return sum(counts.records for origin, counts in self.found.items() if origin in origins)

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


def _read_line(export: ExportFile, kind: object, doc: dict[str, Any]) -> None:
    """Add one line after the header to ``export`` (records only counted: they stay on disk)."""
    if kind not in ("entry", "checkpoint", "prefix", "timestamp", "origin"):
        raise EvidenceFormatError(f"unknown line type {kind!r}")
    origin = field_of(doc, "origin", str)
    found = export.found.setdefault(origin, LineCounts())
    if kind == "entry":
        found.records += 1
    elif kind == "checkpoint":
        export.checkpoints.append(
            StoredCheckpoint(
                origin,
                field_of(doc, "tree_size", int),
                bytes.fromhex(field_of(doc, "root_hash", str)),
                field_of(doc, "note", str),
                field_of(doc, "time", str),
            )
        )
        found.checkpoints += 1
    elif kind == "timestamp":
        export.timestamps.append(_parse_timestamp(doc))
        found.timestamps += 1
    elif kind == "prefix":
        hashes = tuple(bytes.fromhex(h) for h in field_of(doc, "hashes", list))
        export.prefixes[origin] = Frontier(field_of(doc, "tree_size", int), hashes)
    else:
        if origin in export.declared:
            raise EvidenceFormatError(f"a second origin line for {origin!r}")
        counts = (field_of(doc, name, int) for name in ("records", "checkpoints", "timestamps"))
        export.declared[origin] = LineCounts(*counts)


def read_export(path: Path) -> ExportFile:
    """Read an export's header, checkpoints, tokens, prefixes and line counts (records stay on disk).

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
            elif export is None:
                raise EvidenceFormatError(f"unknown line type {kind!r}")
            else:
                _read_line(export, kind, doc)
        except (ValueError, TypeError, MalformedFrontierError, EvidenceFormatError) as exc:
            raise EvidenceFormatError(f"{path}:{number}: {exc}") from exc
    if export is None:
        raise EvidenceFormatError(f"{path} is empty")
    return export


def verify_export(
    export: ExportFile,
    keys: KeyRing,
    *,
    trusted: StoredCheckpoint | None = None,
    origins: list[str] | None = None,
    options: Options = DEFAULT_OPTIONS,
    tsa: TimestampTrust | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Report:
    """Verify an export read by ``read_export`` offline, streaming its records from disk.

    Without ``origins``, every origin the header names *or* any line belongs to is verified, so
    an edited header cannot hide an origin. Beyond the log checks: (1) the header and the closing
    ``origin`` lines must name the same origins as the lines, and each ``origin`` line's counts
    must match the lines held -> INCONSISTENT_EXPORT (an origin whose window was empty has an
    ``origin`` line counting zero; one with no such line had its lines removed, or the file was
    written before exports had them); (2) every record must be covered by a signed checkpoint in
    the file -> UNSIGNED_RECORDS: an unsigned record in a file can be rewritten, leaf hash and all,
    by anyone who handled it; (3) a ``prefix`` frontier (an export that starts mid-log) continues
    the tree, and a prefix with no signed checkpoint after it proves nothing -> ROOT_MISMATCH.

    Raises:
        EvidenceFormatError: nothing in the file to verify, or a named origin is absent from it.
    """
    present = export.all_origins()
    if not present:
        raise EvidenceFormatError(f"{export.path} holds no origin")
    missing = [origin for origin in origins or () if origin not in present]
    if missing:  # as for a store: an origin asked for and absent is not an empty log that verifies
        raise EvidenceFormatError(f"the export holds nothing for origin(s) {', '.join(map(repr, missing))}")
    wanted = set(origins or present)
    checkpoints = [c for c in export.checkpoints if c.origin in wanted]
    report = verify_log(
        export.entries(wanted),
        checkpoints,
        keys,
        trusted,
        on_progress,
        options=options,
        timestamps=[t for t in export.timestamps if t.origin in wanted],
        tsa=tsa,
        prefixes={origin: frontier for origin, frontier in export.prefixes.items() if origin in wanted},
    )
    for origin in sorted(wanted):
        report.problems += _check_lines(export, origin)  # (1)
        unsigned = report.summary.unsigned.get(origin)
        if unsigned is not None:  # (2)
            report.problems.append(
                Problem(
                    ProblemKind.UNSIGNED_RECORDS,
                    origin,
                    unsigned.first_seq,
                    f"{unsigned.count} records from seq {unsigned.first_seq} on are covered by no signed checkpoint "
                    "in the export: whoever handled the file could have rewritten them",
                )
            )
        frontier = export.prefixes.get(origin)
        if frontier is not None and not any(c.origin == origin and c.tree_size > frontier.size for c in checkpoints):
            report.problems.append(  # (3)
                Problem(
                    ProblemKind.ROOT_MISMATCH,
                    origin,
                    frontier.size,
                    "the export starts mid-log but no signed checkpoint after its start confirms the prefix frontier",
                )
            )
    return report


def _check_lines(export: ExportFile, origin: str) -> list[Problem]:
    def inconsistent(reason: str) -> Problem:
        return Problem(ProblemKind.INCONSISTENT_EXPORT, origin, 0, reason)

    problems = []
    if origin not in export.origins:
        problems.append(inconsistent("the export holds lines of this origin but its header does not name it"))
    declared, found = export.declared.get(origin), export.found.get(origin, LineCounts())
    if declared is None:
        problems.append(
            inconsistent(
                f"no origin line closes this origin's lines (the file holds {found.render()}): "
                "its lines were removed, or the file was written by an exporter without origin lines"
            )
        )
    elif declared != found:
        problems.append(inconsistent(f"the origin line counts {declared.render()}, the file holds {found.render()}"))
    return problems
