"""Open stored checkpoints for the verifier: parse, check signatures, origin bindings and windows, compare columns.

Owns turning each ``StoredCheckpoint`` into a trusted ``Checkpoint`` (with its signed time,
retention frontier and closing mark) or into problems. Comparing roots against the rebuilt tree
is origin.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bastion.audit.checkpoint import (
    Checkpoint,
    MalformedNoteError,
    parse_checkpoint,
    parse_checkpoint_time,
    parse_closed,
    parse_retention,
    parse_signed_note,
    verify_note,
)
from bastion.audit.compact import Frontier
from bastion.audit.entry import StoredCheckpoint
from bastion.audit.keys import KeyNotForOriginError, KeyOutsideWindowError, KeyRing, UnknownKeyError
from bastion.errors import BadSignatureError, RootMismatchError
from bastion.verifier.report import Problem, ProblemKind


@dataclass(frozen=True, slots=True)
class OpenedCheckpoint:
    """A checkpoint whose note parsed and whose signature verified under the key ring."""

    checkpoint: Checkpoint
    signed_at: datetime | None
    retention: Frontier | None
    closed: bool = False
    """The writer signed it as it shut down, so no heartbeat is due after it."""


def _parse_stored_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def open_checkpoint(stored: StoredCheckpoint, keys: KeyRing) -> tuple[OpenedCheckpoint | None, list[Problem]]:
    """Return the opened checkpoint (None when it cannot be trusted) and the problems found.

    Steps: (a) parse the signed note and the checkpoint body; (b) verify the signature, the key's
    binding to the signed origin and its window against the ``bastion-time`` line; (c) compare the
    stored columns with the signed values, which win; (d) parse a retention frontier, which must
    rebuild the signed root, and the closing mark.
    """
    origin, size = stored.origin, stored.tree_size
    # (a)
    try:
        note = parse_signed_note(stored.note)
        checkpoint = parse_checkpoint(note.text)
        signed_at = parse_checkpoint_time(checkpoint)
    except MalformedNoteError as exc:
        return None, [Problem(ProblemKind.MALFORMED_CHECKPOINT, origin, size, str(exc))]
    # (b)
    try:
        verify_note(note, keys, signed_at, origin=checkpoint.origin)
    except UnknownKeyError as exc:
        return None, [Problem(ProblemKind.UNKNOWN_KEY, origin, size, str(exc))]
    except KeyNotForOriginError as exc:
        return None, [Problem(ProblemKind.KEY_NOT_FOR_ORIGIN, origin, size, str(exc))]
    except KeyOutsideWindowError as exc:
        return None, [Problem(ProblemKind.KEY_OUTSIDE_WINDOW, origin, size, str(exc))]
    except BadSignatureError as exc:
        return None, [Problem(ProblemKind.BAD_SIGNATURE, origin, size, str(exc))]
    # (c)
    problems = []
    stored_fields = (stored.origin, stored.tree_size, stored.root_hash)
    if stored_fields != (checkpoint.origin, checkpoint.tree_size, checkpoint.root_hash):
        problems.append(
            Problem(
                ProblemKind.MODIFIED_CHECKPOINT,
                origin,
                size,
                f"stored columns differ from the signed note (signed: {checkpoint.origin!r} size {checkpoint.tree_size} "
                f"root {checkpoint.root_hash.hex()[:16]})",
            )
        )
    # (d)
    try:
        retention = parse_retention(checkpoint)
    except (MalformedNoteError, RootMismatchError) as exc:
        problems.append(Problem(ProblemKind.MALFORMED_CHECKPOINT, origin, size, f"retention line: {exc}"))
        retention = None
    try:
        closed = parse_closed(checkpoint)
    except MalformedNoteError as exc:
        problems.append(Problem(ProblemKind.MALFORMED_CHECKPOINT, origin, size, f"closing line: {exc}"))
        closed = False
    when = signed_at if signed_at is not None else _parse_stored_time(stored.time)
    return OpenedCheckpoint(checkpoint, when, retention, closed), problems
