"""Auditor key pairs for sealed raw values: X25519 keys under a name, their text forms and files.

Owns generating a pair (``bastion audit sealkey``), the ``SEAL+…`` / ``PRIVATE+SEAL+…`` text forms
with their key ids, and loading them; sealing and opening envelopes is audit/sealing.py's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bastion.audit.keys import KeyFormatError, verify_key_name

SEAL_VERSION = "bastion.seal/1"
PUBLIC_KEY_PREFIX = "SEAL+"
PRIVATE_KEY_PREFIX = "PRIVATE+SEAL+"
KEY_ID_BYTES = 4


def compute_seal_key_id(name: str, public_key: bytes) -> bytes:
    """Return SHA-256(``bastion.seal/1`` || 0x0A || name || 0x0A || public key)[:4]."""
    return hashlib.sha256(SEAL_VERSION.encode() + b"\n" + name.encode("utf-8") + b"\n" + public_key).digest()[
        :KEY_ID_BYTES
    ]


@dataclass(frozen=True, slots=True)
class SealPublicKey:
    """An auditor's X25519 public key under a name; the gateway seals for it."""

    name: str
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        """The 4-byte id recorded beside each wrapped data key."""
        return compute_seal_key_id(self.name, self.public_key)


@dataclass(frozen=True, slots=True)
class SealPrivateKey:
    """An auditor's X25519 private key; never configured on a gateway."""

    name: str
    private_key: bytes

    def public(self) -> SealPublicKey:
        """Return the matching public key."""
        raw = X25519PrivateKey.from_private_bytes(self.private_key).public_key().public_bytes_raw()
        return SealPublicKey(self.name, raw)


def generate_seal_key(name: str) -> SealPrivateKey:
    """Return a fresh random auditor key pair (``bastion audit sealkey``).

    Raises:
        KeyFormatError: the name is empty or holds spaces or ``+``.
    """
    verify_key_name(name)
    return SealPrivateKey(name, X25519PrivateKey.generate().private_bytes_raw())


def render_seal_public_key(key: SealPublicKey) -> str:
    """Return ``SEAL+<name>+<hex key id>+<base64 public key>``."""
    return f"{PUBLIC_KEY_PREFIX}{key.name}+{key.key_id.hex()}+{base64.b64encode(key.public_key).decode()}"


def render_seal_private_key(key: SealPrivateKey) -> str:
    """Return ``PRIVATE+SEAL+<name>+<hex key id>+<base64 private key>``."""
    key_id = key.public().key_id.hex()
    return f"{PRIVATE_KEY_PREFIX}{key.name}+{key_id}+{base64.b64encode(key.private_key).decode()}"


def _parse_key_text(text: str, prefix: str, what: str) -> tuple[str, str, bytes]:
    text = text.strip()
    if not text.startswith(prefix):
        raise KeyFormatError(f"malformed {what}: missing {prefix} prefix")
    parts = text[len(prefix) :].split("+", 2)  # base64 may hold '+': split only as often as there are fields
    if len(parts) != 3:
        raise KeyFormatError(f"malformed {what}: expected name, key id and key")
    name, key_id_hex, encoded = parts
    verify_key_name(name)
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFormatError(f"malformed {what}: key is not base64") from exc
    if len(raw) != 32:
        raise KeyFormatError(f"malformed {what}: want a 32-byte X25519 key")
    return name, key_id_hex, raw


def parse_seal_public_key(text: str) -> SealPublicKey:
    """Parse the form written by ``render_seal_public_key``.

    Raises:
        KeyFormatError: wrong prefix, field count, encoding, or a key id that does not match.
    """
    name, key_id_hex, raw = _parse_key_text(text, PUBLIC_KEY_PREFIX, "seal public key")
    key = SealPublicKey(name, raw)
    if key.key_id.hex() != key_id_hex:
        raise KeyFormatError("malformed seal public key: key id does not match the key")
    return key


def parse_seal_private_key(text: str) -> SealPrivateKey:
    """Parse the form written by ``render_seal_private_key``.

    Raises:
        KeyFormatError: wrong prefix, field count, encoding, or a key id that does not match.
    """
    name, key_id_hex, raw = _parse_key_text(text, PRIVATE_KEY_PREFIX, "seal private key")
    key = SealPrivateKey(name, raw)
    if key.public().key_id.hex() != key_id_hex:
        raise KeyFormatError("malformed seal private key: key id does not match the key")
    return key


def _read_key_file(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFormatError(f"cannot read key file {path}: {type(exc).__name__}") from exc


def load_seal_public_key(path: str | Path) -> SealPublicKey:
    """Load a recipient's public key file.

    Raises:
        KeyFormatError: the file is missing, unreadable or not a seal public key.
    """
    return parse_seal_public_key(_read_key_file(path))


def load_seal_private_key(path: str | Path) -> SealPrivateKey:
    """Load an auditor's private key file.

    Raises:
        KeyFormatError: the file is missing, unreadable or not a seal private key.
    """
    return parse_seal_private_key(_read_key_file(path))
