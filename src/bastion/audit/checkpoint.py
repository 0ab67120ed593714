"""C2SP tlog-checkpoint bodies inside C2SP signed notes, plus Bastion's time and retention lines.

Owns the checkpoint text (origin, tree size, root hash, extension lines), the signed-note
envelope (text, blank line, ``— name base64(key id || signature)`` lines), signing and verifying
notes against a key ring, and the ``bastion-time`` / ``bastion-retention`` / ``bastion-closed``
extension lines.
Keys and windows are keys.py's; deciding what a checkpoint means for a log is the verifier's.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from bastion.audit.compact import Frontier, MalformedFrontierError
from bastion.audit.hashing import HASH_SIZE_BYTES
from bastion.audit.keys import (
    KEY_ID_BYTES,
    KeyFormatError,
    KeyNotForOriginError,
    KeyOutsideWindowError,
    KeyRing,
    SigningKey,
    UnknownKeyError,
    verify_key_name,
)
from bastion.errors import RootMismatchError, VerificationError

SIGNATURE_PREFIX = "\u2014 "
"""C2SP signed-note §Format: em dash (U+2014), space."""

MAX_NOTE_BYTES = 1 << 20
MAX_SIGNATURES = 100
"""C2SP signed-note asks verifiers to cap signatures and accept at least 16; Go's note caps at 100."""

MAX_TREE_SIZE = (1 << 63) - 1
TIME_EXTENSION = "bastion-time"
RETENTION_EXTENSION = "bastion-retention"
CLOSED_EXTENSION = "bastion-closed"
"""The whole line the writer adds to the checkpoint it signs on shutdown: no heartbeat follows it."""


class MalformedNoteError(VerificationError):
    """Raised when a signed note or the checkpoint inside it breaks the C2SP syntax."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: C2SP tlog-checkpoint §Note text."""

    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: key name, 4-byte key id, raw signature."""

    key_name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignedNote:
    """Note text (ending in a newline) and its signature lines, in order."""

    text: str
    signatures: tuple[NoteSignature, ...]


def _b64decode_canonical(value: str, what: str) -> bytes:
    """Strict RFC 4648 §4 base64 that also rejects non-canonical padding bits (no malleability)."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedNoteError(f"{what} is not base64") from exc
    if base64.b64encode(raw).decode("ascii") != value:
        raise MalformedNoteError(f"{what} is not canonical base64")
    return raw


def _verify_note_chars(text: str) -> None:
    # C2SP signed-note §Format: no ASCII control characters other than newline.
    if any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        raise MalformedNoteError("note contains an ASCII control character other than newline")


def render_checkpoint(checkpoint: Checkpoint) -> str:
    """Return the checkpoint note text (C2SP tlog-checkpoint §Note text), ending in a newline.

    Raises:
        MalformedNoteError: a field could not be parsed back (empty origin or extension line, a
            newline or control character inside a line, a negative size, a root of the wrong size).
    """
    lines = [checkpoint.origin, str(checkpoint.tree_size), base64.b64encode(checkpoint.root_hash).decode("ascii")]
    text = "".join(line + "\n" for line in [*lines, *checkpoint.extensions])
    if parse_checkpoint(text) != checkpoint:
        raise MalformedNoteError("checkpoint fields do not survive rendering")
    return text


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse checkpoint note text (the part a signature covers).

    Raises:
        MalformedNoteError: fewer than three lines, an empty line, a tree size that is not ASCII
            decimal without leading zeros, or a root hash that is not 32 bytes of base64.
    """
    _verify_note_chars(text)
    if not text.endswith("\n"):
        raise MalformedNoteError("checkpoint text must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise MalformedNoteError("checkpoint needs origin, size and root lines, none of them empty")
    origin, size_text, root_text, *extensions = lines
    if not (size_text.isascii() and size_text.isdigit()) or (size_text != "0" and size_text.startswith("0")):
        raise MalformedNoteError("tree size must be ASCII decimal without leading zeros")
    if len(size_text) > 19 or int(size_text) > MAX_TREE_SIZE:
        raise MalformedNoteError("tree size too large")
    root_hash = _b64decode_canonical(root_text, "root hash")
    if len(root_hash) != HASH_SIZE_BYTES:
        raise MalformedNoteError(f"root hash must be {HASH_SIZE_BYTES} bytes")
    return Checkpoint(origin, int(size_text), root_hash, tuple(extensions))


def _signature_line(signature: NoteSignature) -> str:
    payload = base64.b64encode(signature.key_id + signature.signature).decode("ascii")
    return f"{SIGNATURE_PREFIX}{signature.key_name} {payload}\n"


def render_signed_note(note: SignedNote) -> str:
    """Return text, a blank line and one line per signature (C2SP signed-note §Format).

    Raises:
        MalformedNoteError: the result would not parse back to ``note``.
    """
    rendered = note.text + "\n" + "".join(_signature_line(s) for s in note.signatures)
    if parse_signed_note(rendered) != note:
        raise MalformedNoteError("signed note does not survive rendering")
    return rendered


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise MalformedNoteError("signature line must start with an em dash and a space")
    name, sep, payload = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not sep:
        raise MalformedNoteError("signature line needs a key name and a signature")
    try:
        verify_key_name(name)
    except KeyFormatError as exc:
        raise MalformedNoteError("signature line has an invalid key name") from exc
    raw = _b64decode_canonical(payload, "signature")
    if len(raw) <= KEY_ID_BYTES:
        raise MalformedNoteError("signature is too short to hold a key id and a signature")
    return NoteSignature(name, raw[:KEY_ID_BYTES], raw[KEY_ID_BYTES:])


def parse_signed_note(note: str | bytes) -> SignedNote:
    """Split a signed note into its text and signature lines; checks syntax only, not signatures.

    The text ends at the last blank line (C2SP signed-note §Format).

    Raises:
        MalformedNoteError: not UTF-8, too large, a control character, no blank line, no
            signature line, too many signatures, or a malformed signature line.
    """
    if isinstance(note, str):
        try:
            raw = note.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MalformedNoteError("note is not valid Unicode") from exc
    else:
        raw = note
    if len(raw) > MAX_NOTE_BYTES:
        raise MalformedNoteError(f"note larger than {MAX_NOTE_BYTES} bytes")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedNoteError("note is not UTF-8") from exc
    _verify_note_chars(decoded)
    split = decoded.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("note has no blank line before its signatures")
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block.endswith("\n"):
        raise MalformedNoteError("signature block must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNoteError(f"more than {MAX_SIGNATURES} signatures")
    return SignedNote(text, tuple(_parse_signature_line(line) for line in lines))


def sign_note(text: str, key: SigningKey) -> str:
    """Return ``text`` signed by ``key`` as a signed note (Ed25519 over the text, RFC 8032).

    Preconditions: ``text`` ends in a newline and has no control characters but newlines.

    Raises:
        MalformedNoteError: the text breaks the signed-note syntax.
    """
    if not text.endswith("\n") or "\n\n" in text:
        raise MalformedNoteError("note text must end with one newline and hold no blank line")
    _verify_note_chars(text)
    key_id = key.public().key_id
    return render_signed_note(SignedNote(text, (NoteSignature(key.name, key_id, key.sign(text.encode("utf-8"))),)))


def sign_checkpoint(checkpoint: Checkpoint, key: SigningKey) -> str:
    """Return the signed note for ``checkpoint``.

    Raises:
        MalformedNoteError: the checkpoint cannot be rendered.
    """
    return sign_note(render_checkpoint(checkpoint), key)


def verify_note(
    note: SignedNote, key_ring: KeyRing, signed_at: datetime | None = None, *, origin: str | None = None
) -> None:
    """Verify that a trusted key, valid at ``signed_at`` and (for a checkpoint) bound to ``origin``, signed ``note``.

    C2SP signed-note §Signatures: lines from unknown (name, id) pairs are ignored; a known key
    whose signature fails rejects the whole note; at least one known key must verify. Pass the
    checkpoint's ``origin`` whenever the note is a checkpoint: only keys the ring binds to it
    (``KeyRing.may_sign``) count, so one log's key cannot vouch for another log.

    Raises:
        BadSignatureError: a known key's signature does not verify.
        UnknownKeyError: no signature line comes from a key in the ring.
        KeyNotForOriginError: every verified signature is by a key not bound to ``origin``.
        KeyOutsideWindowError: every verified signature by a bound key is outside its key's validity window.
    """
    message = note.text.encode("utf-8")
    known = [(s, key) for s in note.signatures if (key := key_ring.lookup(s.key_name, s.key_id)) is not None]
    if not known:
        names = ", ".join(sorted({s.key_name for s in note.signatures}))
        raise UnknownKeyError(f"no signature from a trusted key (signed by: {names})")
    for signature, key in known:
        key.verify_signature(message, signature.signature)
    bound = [key for _, key in known if origin is None or key_ring.may_sign(key, origin)]
    if not bound:
        key = known[0][1]
        raise KeyNotForOriginError(
            f"signed by key {key.name} ({key.key_id.hex()}), which the key ring does not bind to origin {origin}: "
            f"{key_ring.describe_binding(key)}. If that key may sign this origin, add origin={origin} to its "
            "key ring line"
        )
    first_outside: KeyOutsideWindowError | None = None
    for key in bound:
        try:
            key.verify_window(signed_at)
        except KeyOutsideWindowError as exc:
            first_outside = first_outside or exc
        else:
            return
    raise first_outside or KeyOutsideWindowError("no trusted key was valid when the checkpoint was signed")


def render_time_extension(signed_at: datetime) -> str:
    """Return the ``bastion-time <RFC 3339 UTC, milliseconds>`` line dating a checkpoint."""
    return f"{TIME_EXTENSION} {signed_at.isoformat(timespec='milliseconds').replace('+00:00', 'Z')}"


def parse_checkpoint_time(checkpoint: Checkpoint) -> datetime | None:
    """Return the signed time from a ``bastion-time`` line, or None when there is none.

    Raises:
        MalformedNoteError: the line is repeated or its time is not RFC 3339 with an offset.
    """
    values = [
        line[len(TIME_EXTENSION) + 1 :] for line in checkpoint.extensions if line.startswith(TIME_EXTENSION + " ")
    ]
    if not values:
        return None
    if len(values) > 1:
        raise MalformedNoteError("more than one bastion-time line")
    try:
        parsed = datetime.fromisoformat(values[0])
    except ValueError as exc:
        raise MalformedNoteError("bastion-time is not RFC 3339") from exc
    if parsed.tzinfo is None:
        raise MalformedNoteError("bastion-time needs a UTC offset")
    return parsed


def render_retention_extension(frontier: Frontier) -> str:
    """Return ``bastion-retention <first retained seq> <base64 subtree root>...``.

    The records before ``frontier.size`` were pruned on purpose; the frontier lets a verifier
    continue the tree from there. Use it on a checkpoint whose tree size is ``frontier.size``.
    """
    hashes = " ".join(base64.b64encode(h).decode("ascii") for h in frontier.hashes)
    return f"{RETENTION_EXTENSION} {frontier.size} {hashes}".rstrip()


def parse_retention(checkpoint: Checkpoint) -> Frontier | None:
    """Return the retention frontier of a retention checkpoint, or None for an ordinary one.

    Raises:
        MalformedNoteError: the line is repeated, malformed, names a seq other than the tree size,
            or carries the wrong number of hashes for that size.
        RootMismatchError: the frontier does not reproduce the checkpoint's signed root, so it
            cannot be the tree those pruned records built.
    """
    prefix = RETENTION_EXTENSION + " "
    values = [line[len(prefix) :] for line in checkpoint.extensions if line.startswith(prefix)]
    if not values:
        return None
    if len(values) > 1:
        raise MalformedNoteError("more than one bastion-retention line")
    seq_text, *encoded = values[0].split(" ")
    if not (seq_text.isascii() and seq_text.isdigit()) or int(seq_text) != checkpoint.tree_size:
        raise MalformedNoteError("bastion-retention must name the checkpoint's tree size as first retained seq")
    hashes = tuple(_b64decode_canonical(item, "retention hash") for item in encoded)
    try:
        frontier = Frontier(checkpoint.tree_size, hashes)
    except MalformedFrontierError as exc:
        raise MalformedNoteError(f"bastion-retention frontier does not fit size {checkpoint.tree_size}") from exc
    if frontier.root() != checkpoint.root_hash:
        raise RootMismatchError(checkpoint.root_hash, frontier.root())
    return frontier


def parse_closed(checkpoint: Checkpoint) -> bool:
    """Return whether the writer signed ``checkpoint`` as it shut down (a ``bastion-closed`` line).

    A verifier expects a heartbeat checkpoint within its time limit after every checkpoint but
    a closing one: silence after a signed shutdown is the gateway being down, not a deleted tail.

    Raises:
        MalformedNoteError: the line is repeated or carries text after its name.
    """
    lines = [line for line in checkpoint.extensions if line.split(" ", 1)[0] == CLOSED_EXTENSION]
    if len(lines) > 1:
        raise MalformedNoteError("more than one bastion-closed line")
    if lines and lines[0] != CLOSED_EXTENSION:
        raise MalformedNoteError("bastion-closed takes no value")
    return bool(lines)
