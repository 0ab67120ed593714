"""What the offline verifier found: problem kinds, problems, the summary and their renderings.

Owns the vocabulary an auditor reads (``ProblemKind``), the ``Report`` and its text and JSON
forms; text output escapes control characters so a hostile record cannot forge report lines.
Deciding which problem applies is verifier/origin.py's and verifier/verify.py's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class ProblemKind(Enum):
    """One kind of finding; the value is the stable name used in JSON and in exit diagnostics."""

    MODIFIED_RECORD = "MODIFIED_RECORD"
    """A row's body no longer matches its stored leaf hash, is not canonical, or its columns disagree with it
    (the search columns, and a SQLite search index row, included); or searches cannot find the record, or
    SQLite search index rows belong to no record."""
    DELETED_RECORD = "DELETED_RECORD"
    """Records are missing at positions a signed checkpoint covers (or before the log start, without a retention checkpoint)."""
    INSERTED_RECORD = "INSERTED_RECORD"
    """A row claims a position that another record already holds, or belongs to another origin."""
    REORDERED_RECORDS = "REORDERED_RECORDS"
    """Records are present but stored out of their own seq order."""
    TRUNCATED_TAIL = "TRUNCATED_TAIL"
    """A signed (or trusted) checkpoint covers more records than the log now holds."""
    SEQUENCE_GAP = "SEQUENCE_GAP"
    """Seq numbers skip positions that no signed checkpoint covers yet (unsigned tail)."""
    ROOT_MISMATCH = "ROOT_MISMATCH"
    """Records up to a checkpoint no longer build its signed root, and no later checkpoint matches either."""
    INCONSISTENT_CHECKPOINT = "INCONSISTENT_CHECKPOINT"
    """A validly signed checkpoint disagrees with the tree that later checkpoints (or the trusted one) confirm."""
    BAD_SIGNATURE = "BAD_SIGNATURE"
    """A trusted key's signature on a checkpoint does not verify."""
    UNKNOWN_KEY = "UNKNOWN_KEY"
    """A checkpoint carries no signature from any key in the key ring."""
    KEY_NOT_FOR_ORIGIN = "KEY_NOT_FOR_ORIGIN"
    """A checkpoint is signed only by trusted keys that the key ring does not bind to its origin."""
    KEY_OUTSIDE_WINDOW = "KEY_OUTSIDE_WINDOW"
    """A trusted key signed a checkpoint dated outside that key's validity window."""
    MALFORMED_CHECKPOINT = "MALFORMED_CHECKPOINT"
    """A stored checkpoint note is not a C2SP signed checkpoint."""
    MODIFIED_CHECKPOINT = "MODIFIED_CHECKPOINT"
    """A stored checkpoint's columns (origin, size, root) differ from its signed note."""
    CHECKPOINT_GAP = "CHECKPOINT_GAP"
    """More records or more time than allowed went by without a signed checkpoint (a missing heartbeat included)."""
    UNSIGNED_RECORDS = "UNSIGNED_RECORDS"
    """An export holds records that no signed checkpoint in it covers: anyone who handled the file may have rewritten them."""
    INCONSISTENT_EXPORT = "INCONSISTENT_EXPORT"
    """An export's header or per-origin lines disagree with the lines it holds: lines were removed or added."""
    TRUSTED_UNVERIFIABLE = "TRUSTED_UNVERIFIABLE"
    """The trusted checkpoint lies before the retention point, so retained records cannot reach it."""
    BAD_TIMESTAMP = "BAD_TIMESTAMP"
    """A checkpoint's RFC 3161 token is malformed, altered, or not signed by a trusted TSA."""
    TIMESTAMP_MISMATCH = "TIMESTAMP_MISMATCH"
    """A genuine RFC 3161 token is over no stored note of its checkpoint, or that checkpoint is dated after the TSA time."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: kind, origin, position (a seq or a tree size, as the reason says) and why."""

    kind: ProblemKind
    origin: str
    position: int
    reason: str


@dataclass(frozen=True, slots=True)
class SeqRange:
    """``count`` records from ``first_seq`` on."""

    first_seq: int
    count: int


@dataclass(slots=True)
class Summary:
    """What was read."""

    records: int = 0
    checkpoints: int = 0
    origins: list[str] = field(default_factory=list)
    first_time: str | None = None
    last_time: str | None = None
    starts: dict[str, int] = field(default_factory=dict)
    """Origins whose records start after seq 0 (pruned behind a retention checkpoint, or an export window)."""
    unsigned: dict[str, SeqRange] = field(default_factory=dict)
    """Per origin, the records after its newest signed checkpoint: no signature covers them yet."""
    timestamped_checkpoints: int | None = None
    """Checkpoints carrying at least one verified RFC 3161 token; None when tokens were not checked."""
    latest_timestamp: str | None = None
    """The latest genTime among verified tokens."""


@dataclass(slots=True)
class Report:
    """The verifier's result: ``ok`` only when there are no problems."""

    summary: Summary
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.problems

    def render_text(self) -> str:
        """Return a human report; every untrusted string is escaped so it stays on its own line."""
        s = self.summary
        lines = [
            f"records: {s.records}  checkpoints: {s.checkpoints}  origins: {', '.join(_escape(o) for o in s.origins)}",
            f"time: {_escape(s.first_time or '-')} .. {_escape(s.last_time or '-')}",
        ]
        if s.starts:
            lines.append("starts: " + ", ".join(f"{_escape(o)} at seq {seq}" for o, seq in sorted(s.starts.items())))
        if s.unsigned:
            lines.append(
                "unsigned (after the newest checkpoint): "
                + ", ".join(f"{_escape(o)} {_render_range(r)}" for o, r in sorted(s.unsigned.items()))
            )
        if s.timestamped_checkpoints is not None:
            lines.append(
                f"timestamps: {s.timestamped_checkpoints} checkpoints carry a verified RFC 3161 token, "
                f"latest TSA time {_escape(s.latest_timestamp or '-')}"
            )
        lines.append("result: OK" if self.ok else f"result: FAILED ({len(self.problems)} problems)")
        for p in self.problems:
            lines.append(f"{p.kind.value} origin={_escape(p.origin)} position={p.position}: {_escape(p.reason)}")
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        """Return the report as JSON (machine-readable, ``--json``)."""
        document: dict[str, Any] = {
            "ok": self.ok,
            "summary": {
                "records": self.summary.records,
                "checkpoints": self.summary.checkpoints,
                "origins": self.summary.origins,
                "first_time": self.summary.first_time,
                "last_time": self.summary.last_time,
                "starts": self.summary.starts,
                "unsigned": {
                    origin: {"first_seq": r.first_seq, "records": r.count} for origin, r in self.summary.unsigned.items()
                },
                "timestamped_checkpoints": self.summary.timestamped_checkpoints,
                "latest_timestamp": self.summary.latest_timestamp,
            },
            "problems": [
                {"kind": p.kind.value, "origin": p.origin, "position": p.position, "reason": p.reason}
                for p in self.problems
            ],
        }
        return json.dumps(document, ensure_ascii=True, sort_keys=True)


def _render_range(seqs: SeqRange) -> str:
    return f"seq {seqs.first_seq}..{seqs.first_seq + seqs.count - 1} ({seqs.count} records)"


def _escape(text: str) -> str:
    """Escape C0/C1 controls, DEL, backslash and Unicode line/paragraph separators."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif (
            code < 0x20
            or 0x7F <= code <= 0x9F
            or code
            in (0x2028, 0x2029, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069)
        ):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
