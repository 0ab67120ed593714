"""Ed25519 signing keys for checkpoints and the verifier's key ring with validity windows.

Owns generating a key, the C2SP signed-note key encodings (``PRIVATE+KEY+name+id+base64`` and
the vkey ``name+id+base64``), loading a private key from a file or an environment variable,
and deciding whether a (name, key id) is trusted at a given time and for which origins
(``KeyRing.may_sign``). Note syntax is checkpoint.py's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bastion.audit.record import parse_rfc3339
from bastion.errors import BadSignatureError, ConfigError

ED25519_TYPE = b"\x01"
"""C2SP signed-note §Signature types: 0x01 is Ed25519."""

KEY_ID_BYTES = 4
PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"


class KeyFormatError(ConfigError):
    """Raised when a key, vkey or key-ring line is malformed or cannot be loaded."""


class UnknownKeyError(BadSignatureError):
    """Raised when no signature on a note comes from a key in the key ring."""


class KeyOutsideWindowError(BadSignatureError):
    """Raised when a trusted key signed a checkpoint dated outside that key's validity window."""


class KeyNotForOriginError(BadSignatureError):
    """Raised when only trusted keys that the key ring does not bind to a checkpoint's origin signed it."""


READER_ORIGIN_SUFFIX = "/cli"
"""A gateway's CLI readers record to ``<origin>/cli``, signed with the gateway's key (cli/audit_reader.py)."""


def verify_key_name(name: str) -> None:
    """Check a C2SP key name: non-empty, no Unicode spaces, no ``+``.

    Raises:
        KeyFormatError: the name breaks one of those rules.
    """
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise KeyFormatError(f"invalid key name {name!r}: must be non-empty, without spaces or '+'")


def compute_key_id(name: str, public_key: bytes) -> bytes:
    """Return SHA-256(name || 0x0A || 0x01 || public key)[:4] (C2SP signed-note §Ed25519 signatures)."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + ED25519_TYPE + public_key).digest()[:KEY_ID_BYTES]


def _parse_time(value: str) -> datetime:
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        raise KeyFormatError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A public Ed25519 key under a name, trusted for checkpoints dated in [valid_from, valid_until)."""

    name: str
    public_key: bytes
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    origins: tuple[str, ...] = ()
    """The origins this key may sign checkpoints for (key ring ``origin=``); empty: see ``KeyRing.may_sign``."""

    @property
    def key_id(self) -> bytes:
        """The 4-byte C2SP key id."""
        return compute_key_id(self.name, self.public_key)

    def verify_signature(self, message: bytes, signature: bytes) -> None:
        """Verify an Ed25519 signature (RFC 8032 §5.1.7) over ``message``.

        Raises:
            BadSignatureError: the signature does not verify under this key.
        """
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError) as exc:
            raise BadSignatureError(f"signature by {self.name} does not verify") from exc

    def verify_window(self, signed_at: datetime | None) -> None:
        """Check that a checkpoint dated ``signed_at`` falls inside this key's validity window.

        Raises:
            KeyOutsideWindowError: outside the window, or undated while the key has a window.
        """
        if self.valid_from is None and self.valid_until is None:
            return
        if signed_at is None:
            raise KeyOutsideWindowError(f"key {self.name} has a validity window but the checkpoint carries no time")
        if self.valid_from is not None and signed_at < self.valid_from:
            raise KeyOutsideWindowError(f"key {self.name} signed at {signed_at.isoformat()}, before its window opens")
        if self.valid_until is not None and signed_at >= self.valid_until:
            raise KeyOutsideWindowError(f"key {self.name} signed at {signed_at.isoformat()}, after its window closed")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private Ed25519 key under a name (the log's origin, by convention)."""

    name: str
    seed: bytes
    """The 32-byte RFC 8032 private key."""

    def public(self) -> VerifierKey:
        """Return the matching verifier key (no validity window)."""
        raw = Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes_raw()
        return VerifierKey(self.name, raw)

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature over ``message``."""
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def generate_signing_key(name: str) -> SigningKey:
    """Return a fresh random signing key (``bastion audit keygen``).

    Raises:
        KeyFormatError: the name is not a valid C2SP key name.
    """
    verify_key_name(name)
    return SigningKey(name, Ed25519PrivateKey.generate().private_bytes_raw())


def _split_key(text: str, parts_wanted: int, what: str) -> list[str]:
    # Names and hex ids hold no '+', but base64 may: split only as often as there are fields.
    parts = text.strip().split("+", parts_wanted - 1)
    if len(parts) != parts_wanted:
        raise KeyFormatError(f"malformed {what}: expected {parts_wanted} '+'-separated fields")
    return parts


def _decode_typed_key(name: str, encoded: str, what: str) -> bytes:
    verify_key_name(name)
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFormatError(f"malformed {what}: key is not base64") from exc
    if len(raw) != 33 or raw[:1] != ED25519_TYPE:
        raise KeyFormatError(f"malformed {what}: want 0x01 followed by a 32-byte Ed25519 key")
    return raw[1:]


def render_signing_key(key: SigningKey) -> str:
    """Return ``PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>`` (the Go sumdb/note form)."""
    key_id = key.public().key_id.hex()
    return f"{PRIVATE_KEY_PREFIX}{key.name}+{key_id}+{base64.b64encode(ED25519_TYPE + key.seed).decode()}"


def parse_signing_key(text: str) -> SigningKey:
    """Parse the form written by ``render_signing_key``.

    Raises:
        KeyFormatError: wrong prefix, field count, encoding, or a key id that does not match.
    """
    if not text.strip().startswith(PRIVATE_KEY_PREFIX):
        raise KeyFormatError("malformed private key: missing PRIVATE+KEY+ prefix")
    _, _, name, key_id_hex, encoded = _split_key(text, 5, "private key")
    key = SigningKey(name, _decode_typed_key(name, encoded, "private key"))
    if key.public().key_id.hex() != key_id_hex:
        raise KeyFormatError("malformed private key: key id does not match the key")
    return key


def load_signing_key(
    *, path: str | Path | None = None, env_var: str | None = None, environ: Mapping[str, str] = os.environ
) -> SigningKey:
    """Load a private key from a file or from an environment variable (exactly one of them).

    Raises:
        KeyFormatError: neither or both sources given, the source is missing or unreadable,
            or its content is not a private key.
    """
    if env_var is not None and path is None:
        if env_var not in environ:
            raise KeyFormatError(f"environment variable {env_var} is not set")
        return parse_signing_key(environ[env_var])
    if path is not None and env_var is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFormatError(f"cannot read key file {path}: {type(exc).__name__}") from exc
        return parse_signing_key(text)
    raise KeyFormatError("give exactly one of a key file path or an environment variable")


def render_vkey(key: VerifierKey) -> str:
    """Return the C2SP verifier key ``<name>+<hex key id>+<base64(0x01 || public key)>``."""
    return f"{key.name}+{key.key_id.hex()}+{base64.b64encode(ED25519_TYPE + key.public_key).decode()}"


def parse_vkey(text: str) -> VerifierKey:
    """Parse a C2SP verifier key (no validity window).

    Raises:
        KeyFormatError: wrong field count, encoding, or a key id that does not match the key.
    """
    name, key_id_hex, encoded = _split_key(text, 3, "vkey")
    key = VerifierKey(name, _decode_typed_key(name, encoded, "vkey"))
    if key.key_id.hex() != key_id_hex:
        raise KeyFormatError("malformed vkey: key id does not match the key")
    return key


class KeyRing:
    """The verifier's trusted keys, looked up by (name, key id) as C2SP signed-note requires."""

    def __init__(self, keys: Iterable[VerifierKey] = ()) -> None:
        """Build a ring; a later key with the same (name, id) replaces an earlier one."""
        self._keys = {(key.name, key.key_id): key for key in keys}
        self._claimed = {origin for key in self._keys.values() for origin in key.origins or (key.name,)}
        """Origins some key claims outright: by an ``origin=`` binding, or, unbound, by its name."""
        self._sole_key_log: str | None = None
        """The one log (an origin and its reader log) a sole unbound key has vouched for, rule (3)."""

    def lookup(self, name: str, key_id: bytes) -> VerifierKey | None:
        """Return the trusted key with exactly this name and id, or None."""
        return self._keys.get((name, key_id))

    def may_sign(self, key: VerifierKey, origin: str) -> bool:
        """Whether ``key`` (a key of this ring) may sign checkpoints of ``origin``.

        Without this, whoever holds the key of one origin could re-sign another origin's rewritten
        log. (1) A key with ``origin=`` bindings signs exactly those origins. (2) An unbound key signs
        the origin equal to its name (the C2SP convention), and that origin's reader log
        ``<name>/cli`` unless another key claims it. (3) An unbound key that is the ring's only key
        signs one log whatever its name, an origin and its reader log: the first it is asked about.
        A second log then needs a binding, so that one key cannot vouch for two logs of a shared
        store whose other key the auditor does not hold.
        """
        if key.origins:  # (1)
            return origin in key.origins
        if origin == key.name:  # (2)
            return True
        if origin == key.name + READER_ORIGIN_SUFFIX and origin not in self._claimed:
            return True
        if len(self._keys) != 1:
            return False
        log = origin.removesuffix(READER_ORIGIN_SUFFIX)  # (3)
        if self._sole_key_log is None:
            self._sole_key_log = log
        return log == self._sole_key_log

    def describe_binding(self, key: VerifierKey) -> str:
        """Say which origins ``key`` may sign, for an error message."""
        if key.origins:
            return "it is bound to " + ", ".join(f"origin={origin}" for origin in key.origins)
        sole = f", and as the key ring's only key the log {self._sole_key_log}" if self._sole_key_log else ""
        return (
            f"it has no origin= binding, so it signs only origin {key.name} (its name) and {key.name}"
            f"{READER_ORIGIN_SUFFIX}{sole}"
        )

    def __iter__(self) -> Iterator[VerifierKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)


def parse_key_ring(text: str) -> KeyRing:
    """Parse one key per line: ``<vkey> [from=<RFC 3339>] [until=<RFC 3339>] [origin=<origin>]...``.

    ``#`` starts a comment. ``origin=`` may be repeated: each names an origin the key may sign
    (see ``KeyRing.may_sign`` for a key without one).

    Raises:
        KeyFormatError: a malformed vkey, option or time, or an empty or repeated origin.
    """
    keys: list[VerifierKey] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        vkey, *options = line.split()
        key = parse_vkey(vkey)
        window: dict[str, datetime] = {}
        origins: list[str] = []
        for option in options:
            field, sep, value = option.partition("=")
            if sep and field == "origin" and value and value not in origins:
                origins.append(value)
            elif not sep or field not in ("from", "until") or field in window:
                raise KeyFormatError(f"key ring line {number}: unknown, empty or repeated option {option!r}")
            else:
                window[field] = _parse_time(value)
        keys.append(VerifierKey(key.name, key.public_key, window.get("from"), window.get("until"), tuple(origins)))
    return KeyRing(keys)


def render_key_ring(ring: KeyRing) -> str:
    """Render a key ring in the form ``parse_key_ring`` reads."""
    lines = []
    for key in ring:
        options = [f"from={key.valid_from.isoformat()}"] if key.valid_from else []
        options += [f"until={key.valid_until.isoformat()}"] if key.valid_until else []
        options += [f"origin={origin}" for origin in key.origins]
        lines.append(" ".join([render_vkey(key), *options]))
    return "".join(line + "\n" for line in lines)
