"""Reading an export (``bastion-audit-export/1``) and verifying it offline.

Owns parsing the file's lines (records stay on disk and are streamed on a second pass) and
``verify_export``: the file checked against its header and closing ``origin`` lines, the rest
handed to the offline verifier. The format is audit/export.py's; deciding what the log
evidence means is the verifier's.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bastion.audit.compact import Frontier, MalformedFrontierError
from bastion.audit.entry import LogEntry, StoredCheckpoint, StoredTimestamp
from bastion.audit.evidence import EvidenceFormatError, field_of
from bastion.audit.export import EXPORT_FORMAT, LineCounts, LineType
from bastion.audit.keys import KeyRing
from bastion.audit.reading import DEFAULT_OPTIONS
from bastion.verifier import Options, Problem, ProblemKind, Report, TimestampTrust, verify_log

_AFTER_HEADER = tuple(kind for kind in LineType if kind is not LineType.HEADER)
"""The line types a file may hold after its header; a tuple, as a line's type may be any JSON value, hashable or not."""


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
            if doc.get("type") == LineType.ENTRY and doc.get("origin") in origins:
                try:
                    yield _parse_entry(doc)
                except (ValueError, EvidenceFormatError) as exc:
                    raise EvidenceFormatError(f"{self.path}:{number}: {exc}") from exc


def _read_line(export: ExportFile, kind: object, doc: dict[str, Any]) -> None:
    """Add one line after the header to ``export`` (records only counted: they stay on disk)."""
    if kind not in _AFTER_HEADER:
        raise EvidenceFormatError(f"unknown line type {kind!r}")
    origin = field_of(doc, "origin", str)
    found = export.found.setdefault(origin, LineCounts())
    if kind == LineType.ENTRY:
        found.records += 1
    elif kind == LineType.CHECKPOINT:
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
    elif kind == LineType.TIMESTAMP:
        export.timestamps.append(_parse_timestamp(doc))
        found.timestamps += 1
    elif kind == LineType.PREFIX:
        hashes = tuple(bytes.fromhex(h) for h in field_of(doc, "hashes", list))
        export.prefixes[origin] = Frontier(field_of(doc, "tree_size", int), hashes)
    else:
        if origin in export.declared:
            raise EvidenceFormatError(f"a second origin line for {origin!r}")
        counts = (field_of(doc, count.name, int) for count in fields(LineCounts))
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
                if kind != LineType.HEADER or doc.get("format") != EXPORT_FORMAT:
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
