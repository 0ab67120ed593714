"""Portable evidence: the JSON Lines export of a log and the inclusion-proof document.

Owns both file formats (write, read, verify). An export holds records, checkpoints and, when it
starts mid-log, the frontier before its first record; ``verify_export`` hands it to the offline
verifier. Reading the store is audit/reading.py's; deciding what the evidence means is the verifier's.
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
from bastion.audit.keys import KeyRing, VerifierKey, generate_signing_key
from bastion.audit.proof import verify_inclusion
from bastion.audit.reading import DEFAULT_OPTIONS, PAGE_RECORDS, InclusionProof, fetch_all_checkpoints
from bastion.audit.record import render_time
from bastion.errors import BastionError, VerificationError
from bastion.storage.base import AuditStore
from bastion.verifier import Options, Problem, ProblemKind, Report, verify_log

EXPORT_FORMAT = "bastion-audit-export/1"
PROOF_FORMAT = "bastion-inclusion-proof/1"
PREFIX_KEY_NAME = "bastion-export-prefix"
"""Name of the throw-away key that vouches only for an export's own prefix line (see ``verify_export``)."""


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


async def write_export(store: AuditStore, origins: list[str], window: ExportWindow, out: IO[str]) -> ExportStats:
    """Write the records of ``origins`` inside ``window`` and the checkpoints that sign them.

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


async def _export_origin(
    store: AuditStore, origin: str, window: ExportWindow, out: IO[str], stats: ExportStats
) -> None:
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


# -- reading and verifying an export -------------------------------------------------------------------


def _field(doc: dict[str, Any], key: str, kind: type) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ExportFormatError(f"{doc.get('type')} line: {key} must be a {kind.__name__}")
    return value


def _read_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    doc = json.loads(line)
                except ValueError as exc:
                    raise ExportFormatError(f"{path}:{number}: not JSON") from exc
                if not isinstance(doc, dict):
                    raise ExportFormatError(f"{path}:{number}: not a JSON object")
                yield number, doc
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportFormatError(f"cannot read {path}: {type(exc).__name__}") from exc


def _parse_entry(doc: dict[str, Any]) -> LogEntry:
    if "body" in doc:
        try:
            body = _field(doc, "body", str).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ExportFormatError("entry line: body is not valid Unicode") from exc
    else:
        try:
            body = base64.b64decode(_field(doc, "body_b64", str), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ExportFormatError("entry line: body_b64 is not base64") from exc
    return LogEntry(
        _field(doc, "origin", str),
        _field(doc, "seq", int),
        _field(doc, "time", str),
        _field(doc, "kind", str),
        body,
        bytes.fromhex(_field(doc, "leaf_hash", str)),
    )


@dataclass(slots=True)
class ExportFile:
    """An export's header, checkpoints and prefixes; records are streamed by ``entries()``."""

    path: Path
    origins: list[str]
    checkpoints: list[StoredCheckpoint]
    prefixes: dict[str, Frontier]

    def entries(self, origins: set[str]) -> Iterator[LogEntry]:
        """Yield the records of ``origins`` in file order (a second pass over the file).

        Raises:
            ExportFormatError: a record line is malformed.
        """
        for number, doc in _read_lines(self.path):
            if doc.get("type") == "entry" and doc.get("origin") in origins:
                try:
                    yield _parse_entry(doc)
                except (ValueError, ExportFormatError) as exc:
                    raise ExportFormatError(f"{self.path}:{number}: {exc}") from exc


def read_export(path: Path) -> ExportFile:
    """Read an export's header, checkpoints and prefixes (records stay on disk).

    Raises:
        ExportFormatError: the file is unreadable, has no header, or a line is malformed.
    """
    export: ExportFile | None = None
    for number, doc in _read_lines(path):
        kind = doc.get("type")
        try:
            if number == 1:
                if kind != "header" or doc.get("format") != EXPORT_FORMAT:
                    raise ExportFormatError(f"first line is not a {EXPORT_FORMAT} header")
                origins = _field(doc, "origins", list)
                export = ExportFile(path, [o for o in origins if isinstance(o, str)], [], {})
            elif export is None or kind not in ("entry", "checkpoint", "prefix"):
                raise ExportFormatError(f"unknown line type {kind!r}")
            elif kind == "checkpoint":
                export.checkpoints.append(
                    StoredCheckpoint(
                        _field(doc, "origin", str),
                        _field(doc, "tree_size", int),
                        bytes.fromhex(_field(doc, "root_hash", str)),
                        _field(doc, "note", str),
                        _field(doc, "time", str),
                    )
                )
            elif kind == "prefix":
                hashes = tuple(bytes.fromhex(h) for h in _field(doc, "hashes", list))
                export.prefixes[_field(doc, "origin", str)] = Frontier(_field(doc, "tree_size", int), hashes)
        except (ValueError, TypeError, MalformedFrontierError, ExportFormatError) as exc:
            raise ExportFormatError(f"{path}:{number}: {exc}") from exc
    if export is None:
        raise ExportFormatError(f"{path} is empty")
    return export


def verify_export(
    path: Path,
    keys: KeyRing,
    *,
    trusted: StoredCheckpoint | None = None,
    origins: list[str] | None = None,
    options: Options = DEFAULT_OPTIONS,
) -> Report:
    """Verify an export offline, streaming its records from disk.

    A ``prefix`` frontier (an export that starts mid-log) is given to the verifier as a retention
    checkpoint signed by a throw-away key added to the ring for this call only: the verifier then
    continues the tree from it, and only the log's own signed checkpoints after it can confirm it.
    A prefix with no such checkpoint in the file proves nothing and is reported as a root mismatch.

    Raises:
        ExportFormatError: the file is not a readable export.
    """
    export = read_export(path)
    wanted = set(origins or export.origins)
    checkpoints = [c for c in export.checkpoints if c.origin in wanted]
    ring, synthetic = keys, list[StoredCheckpoint]()
    if any(origin in wanted for origin in export.prefixes):
        ring = KeyRing([*keys, *_prefix_keys(export, wanted, synthetic)])
    report = verify_log(export.entries(wanted), [*synthetic, *checkpoints], ring, trusted, options=options)
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
        ExportFormatError: not JSON, wrong format tag, or a field of the wrong type.
    """
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != PROOF_FORMAT:
            raise ExportFormatError(f"not a {PROOF_FORMAT} document")
        body = doc.get("body")
        return InclusionProof(
            _field(doc, "origin", str),
            _field(doc, "leaf_index", int),
            _field(doc, "tree_size", int),
            bytes.fromhex(_field(doc, "leaf_hash", str)),
            tuple(bytes.fromhex(h) for h in _field(doc, "proof", list)),
            _field(doc, "checkpoint", str),
            body.encode("utf-8") if isinstance(body, str) else None,
        )
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise ExportFormatError(f"malformed proof document: {exc}") from exc


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
