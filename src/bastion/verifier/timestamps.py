"""Check RFC 3161 tokens on checkpoints (step 9 of verify.py's checklist).

Owns matching each stored token to the checkpoint note it covers, the verdict per token
(BAD_TIMESTAMP, TIMESTAMP_MISMATCH) and the counts for the summary. What makes a token valid is
audit/timestamp_token.py's; opening checkpoints is checkpoints.py's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from bastion.audit.entry import StoredCheckpoint, StoredTimestamp
from bastion.audit.timestamp_token import OpenedToken, TimestampError, TimestampMismatchError, note_digest, open_token
from bastion.verifier.report import Problem, ProblemKind

DEFAULT_TOLERANCE_S = 5.0
"""How much later than its token's genTime a checkpoint may be dated: clock skew between gateway and TSA."""


@dataclass(frozen=True, slots=True)
class TimestampTrust:
    """What the auditor trusts for tokens: TSA certificates and how far a checkpoint's clock may run ahead."""

    certificates: tuple[x509.Certificate, ...]
    """Roots (and intermediates) a token's signer must chain to."""
    tolerance_s: float = DEFAULT_TOLERANCE_S
    """A checkpoint's ``bastion-time`` may be at most this much later than its token's genTime."""


@dataclass(slots=True)
class TimestampFindings:
    """Problems found in tokens, and what the verified ones establish."""

    problems: list[Problem]
    timestamped_checkpoints: int = 0
    latest: datetime | None = None


class TimestampCheck:
    """Collect checkpoint notes with ``add_checkpoint``, then judge tokens with ``check``."""

    def __init__(self, trust: TimestampTrust) -> None:
        self._trust = trust
        self._notes: dict[tuple[str, int], dict[bytes, datetime | None]] = {}
        """(origin, tree size) -> note digest -> the note's verified ``bastion-time`` (None: it did not open)."""

    def add_checkpoint(self, stored: StoredCheckpoint, signed_at: datetime | None) -> None:
        """Remember a stored note by its digest (heartbeats give one size several notes; a token covers one)."""
        self._notes.setdefault((stored.origin, stored.tree_size), {})[note_digest(stored.note)] = signed_at

    def check(self, stamps: Iterable[StoredTimestamp]) -> TimestampFindings:
        """Verify every token against the notes stored at its origin and tree size."""
        findings = TimestampFindings([])
        stamped: set[tuple[str, int, bytes]] = set()
        for stamp in stamps:
            opened = self._check_one(stamp, findings.problems)
            if opened is None:
                continue
            stamped.add((stamp.origin, stamp.tree_size, opened.digest))
            findings.latest = opened.gen_time if findings.latest is None else max(findings.latest, opened.gen_time)
        findings.timestamped_checkpoints = len(stamped)
        return findings

    def _check_one(self, stamp: StoredTimestamp, problems: list[Problem]) -> OpenedToken | None:
        def report(kind: ProblemKind, reason: str) -> None:
            problems.append(Problem(kind, stamp.origin, stamp.tree_size, f"time-stamp from {stamp.tsa}: {reason}"))

        # (9a) signature and chain.
        try:
            opened = open_token(stamp.token, self._trust.certificates)
        except TimestampMismatchError as exc:
            report(ProblemKind.TIMESTAMP_MISMATCH, str(exc))
            return None
        except TimestampError as exc:
            report(ProblemKind.BAD_TIMESTAMP, str(exc))
            return None
        # (9b) over a note stored at this size.
        notes = self._notes.get((stamp.origin, stamp.tree_size))
        if not notes:
            report(ProblemKind.TIMESTAMP_MISMATCH, "no checkpoint of this tree size is stored")
            return None
        if opened.digest not in notes:
            report(ProblemKind.TIMESTAMP_MISMATCH, "the imprint is not SHA-256 of any note stored at this tree size")
            return None
        # (9c) the checkpoint does not claim a time after the TSA saw it.
        signed_at = notes[opened.digest]
        if signed_at is not None:
            ahead = (signed_at - opened.gen_time).total_seconds()
            if ahead > self._trust.tolerance_s:
                report(
                    ProblemKind.TIMESTAMP_MISMATCH,
                    f"the checkpoint is dated {ahead:.0f} s after the TSA time {render_gen_time(opened.gen_time)}",
                )
                return None
        return opened


def render_gen_time(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds (truncated), the form the rest of the report uses."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
