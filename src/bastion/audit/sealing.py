"""Sealed raw values: envelope encryption of unmasked arguments and results for auditors only.

Owns the sealed envelope ``bastion.seal/1``
(a fresh AES-256-GCM data key per value, wrapped for each recipient by ephemeral X25519 ECDH +
HKDF-SHA256), its binding to the record that carries it, and opening it again. What gets sealed
and when is the audit stage's business; the auditor keys are audit/seal_keys.py's, and the gateway
only ever holds public keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bastion.audit.canonical import CanonicalEncodingError, canonical_bytes
from bastion.audit.keys import KeyFormatError
from bastion.audit.seal_keys import KEY_ID_BYTES, SEAL_VERSION, SealPrivateKey, SealPublicKey, load_seal_public_key
from bastion.errors import VerificationError

if TYPE_CHECKING:
    from bastion.audit.settings import SealRawSettings

_log = logging.getLogger(__name__)

NONCE_BYTES = 12
_WRAP_INFO = b"bastion.seal/1 wrap\n"
"""HKDF info prefix; followed by the ephemeral and the recipient public keys (both 32 bytes)."""


class SealedField(StrEnum):
    """Which raw value an envelope holds; the key under the record's ``sealed`` object."""

    ARGUMENTS = "arguments"
    """The request's arguments (params without ``_meta`` for other methods), before masking."""
    RESULT = "result"
    """The reply's result before masking."""


class UnsealError(VerificationError):
    """Raised when a sealed value cannot be opened: wrong key, moved or altered envelope, digest mismatch."""


class MalformedEnvelopeError(UnsealError):
    """Raised when a record's ``sealed`` entry is not a ``bastion.seal/1`` envelope."""


# -- binding: the additional authenticated data --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SealContext:
    """What ties an envelope to its record; authenticated (AES-GCM AAD), not encrypted.

    Only fields known before the writer sequences the record: the seq and time are not, so the
    binding rests on ``sha256`` — the record's digest of exactly the sealed bytes.
    """

    origin: str
    field: SealedField
    upstream: str | None
    method: str | None
    name: str | None
    sha256: str

    def render(self) -> bytes:
        """Return the RFC 8785 bytes used as AAD."""
        return canonical_bytes(
            {
                "v": SEAL_VERSION,
                "origin": self.origin,
                "field": self.field.value,
                "upstream": self.upstream,
                "method": self.method,
                "name": self.name,
                "sha256": self.sha256,
            }
        )


def _group(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body.get(name)
    return value if isinstance(value, Mapping) else {}


def _text(group: Mapping[str, Any], name: str) -> str | None:
    value = group.get(name)
    return value if isinstance(value, str) else None


_DIGEST_FIELD = {SealedField.ARGUMENTS: "arguments_sha256", SealedField.RESULT: "upstream_sha256"}
"""Where a record body keeps the SHA-256 of exactly the bytes its envelope seals."""


def context_from_body(body: Mapping[str, Any], field: SealedField) -> SealContext:
    """Rebuild the binding of ``field``'s envelope from a stored record body (schema bastion.audit/1 or /2).

    Raises:
        MalformedEnvelopeError: the record lacks its origin or the digest of the sealed value.
    """
    what, where = _group(body, "what"), _group(body, "where")
    digest = _text(what if field is SealedField.ARGUMENTS else _group(body, "result"), _DIGEST_FIELD[field])
    origin = _text(body, "origin")
    if digest is None or origin is None:
        raise MalformedEnvelopeError(f"record carries a sealed {field.value} but no origin or digest to bind it to")
    return SealContext(origin, field, _text(where, "upstream"), _text(what, "method"), _text(what, "name"), digest)


# -- envelopes -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recipient:
    """The data key wrapped for one auditor key."""

    key_name: str
    key_id: bytes
    ephemeral_public: bytes
    wrapped_key: bytes


@dataclass(frozen=True, slots=True)
class Envelope:
    """One sealed value: AES-256-GCM ciphertext (with tag) under a data key wrapped per recipient."""

    recipients: tuple[Recipient, ...]
    nonce: bytes
    ciphertext: bytes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedEnvelopeError(f"envelope {what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedEnvelopeError(f"envelope {what} is not base64") from exc


def render_envelope(envelope: Envelope) -> dict[str, Any]:
    """Return the JSON form stored under the record's ``sealed`` object."""
    return {
        "version": SEAL_VERSION,
        "recipients": [
            {
                "key_name": r.key_name,
                "key_id": r.key_id.hex(),
                "ephemeral_public": _b64(r.ephemeral_public),
                "wrapped_key": _b64(r.wrapped_key),
            }
            for r in envelope.recipients
        ],
        "nonce": _b64(envelope.nonce),
        "ciphertext": _b64(envelope.ciphertext),
    }


def parse_envelope(value: Any) -> Envelope:
    """Parse the form written by ``render_envelope``.

    Raises:
        MalformedEnvelopeError: not an object, another version, or a field of the wrong shape.
    """
    if not isinstance(value, Mapping) or value.get("version") != SEAL_VERSION:
        raise MalformedEnvelopeError(f"sealed value is not a {SEAL_VERSION} envelope")
    raw_recipients = value.get("recipients")
    if not isinstance(raw_recipients, list) or not raw_recipients:
        raise MalformedEnvelopeError("envelope has no recipients")
    recipients = []
    for item in raw_recipients:
        if not isinstance(item, Mapping) or not isinstance(item.get("key_name"), str):
            raise MalformedEnvelopeError("envelope recipient is not an object with a key_name")
        key_id_hex = item.get("key_id")
        if not isinstance(key_id_hex, str) or len(key_id_hex) != 2 * KEY_ID_BYTES:
            raise MalformedEnvelopeError(f"envelope recipient key_id is not {2 * KEY_ID_BYTES} hex digits")
        try:
            key_id = bytes.fromhex(key_id_hex)
        except ValueError as exc:
            raise MalformedEnvelopeError("envelope recipient key_id is not hex") from exc
        recipients.append(
            Recipient(
                item["key_name"], key_id, _unb64(item.get("ephemeral_public"), "ephemeral_public"),
                _unb64(item.get("wrapped_key"), "wrapped_key"),
            )
        )
    nonce = _unb64(value.get("nonce"), "nonce")
    if len(nonce) != NONCE_BYTES:
        raise MalformedEnvelopeError(f"envelope nonce must be {NONCE_BYTES} bytes")
    return Envelope(tuple(recipients), nonce, _unb64(value.get("ciphertext"), "ciphertext"))


def _wrapping_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> tuple[bytes, bytes]:
    # RFC 5869 HKDF-SHA256 over the X25519 (RFC 7748) secret; both public keys in info bind the KEK
    # to this exchange. 44 bytes = a single-use AES-256 key and its nonce (each KEK wraps one key).
    okm = HKDF(algorithm=hashes.SHA256(), length=32 + NONCE_BYTES, salt=None, info=_WRAP_INFO + ephemeral_public + recipient_public).derive(shared)
    return okm[:32], okm[32:]


def seal(plaintext: bytes, context: SealContext, recipients: Iterable[SealPublicKey]) -> Envelope:
    """Encrypt ``plaintext`` under a fresh data key bound to ``context`` and wrap that key for each recipient.

    Preconditions: at least one recipient.
    """
    recipients = list(recipients)
    if not recipients:
        raise ValueError("seal needs at least one recipient")
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, context.render())
    wrapped = []
    for key in recipients:
        ephemeral = X25519PrivateKey.generate()
        ephemeral_public = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(key.public_key))
        kek, kek_nonce = _wrapping_key(shared, ephemeral_public, key.public_key)
        wrapped.append(Recipient(key.name, key.key_id, ephemeral_public, AESGCM(kek).encrypt(kek_nonce, data_key, None)))
    return Envelope(tuple(wrapped), nonce, ciphertext)


def open_envelope(envelope: Envelope, context: SealContext, key: SealPrivateKey) -> bytes:
    """Return the plaintext of ``envelope`` for ``key``, checking it is bound to ``context``.

    Raises:
        UnsealError: not sealed for this key, the wrapped key does not open, or the envelope
            was sealed for another record (or altered).
    """
    public = key.public()
    # 1. Find the recipient entry for this key.
    mine = [r for r in envelope.recipients if r.key_id == public.key_id and r.key_name == public.name]
    if not mine:
        sealed_for = ", ".join(f"{r.key_name}+{r.key_id.hex()}" for r in envelope.recipients)
        raise UnsealError(f"not sealed for key {public.name}+{public.key_id.hex()} (sealed for: {sealed_for})")
    # 2. Unwrap the data key.
    try:
        shared = X25519PrivateKey.from_private_bytes(key.private_key).exchange(
            X25519PublicKey.from_public_bytes(mine[0].ephemeral_public)
        )
        kek, kek_nonce = _wrapping_key(shared, mine[0].ephemeral_public, public.public_key)
        data_key = AESGCM(kek).decrypt(kek_nonce, mine[0].wrapped_key, None)
    except (InvalidTag, ValueError) as exc:
        raise UnsealError(f"the data key wrapped for {public.name} does not open (altered envelope)") from exc
    # 3. Decrypt with the record's binding as AAD.
    try:
        return AESGCM(data_key).decrypt(envelope.nonce, envelope.ciphertext, context.render())
    except (InvalidTag, ValueError) as exc:
        raise UnsealError(
            f"sealed {context.field.value} does not belong to this record (moved from another record, or altered)"
        ) from exc


def unseal_record(body: bytes, key: SealPrivateKey, field: SealedField | None = None) -> tuple[SealedField, Any]:
    """Open a sealed value of a stored record body (its only one when ``field`` is None).

    Returns the field and the raw JSON value.

    Raises:
        UnsealError: the body is not JSON, holds no (or more than one, with no ``field``) sealed
            value, it does not open for ``key``, or the plaintext does not match the record's digest.
    """
    # 1. The envelope, and the binding rebuilt from the record's own fields.
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UnsealError("the record body is not JSON") from exc
    sealed = doc.get("sealed") if isinstance(doc, dict) else None
    sealed = sealed if isinstance(sealed, dict) else {}
    present = [f for f in SealedField if f.value in sealed]
    if field is None and len(present) > 1:
        raise UnsealError(f"the record holds several sealed values; choose one of {[f.value for f in present]}")
    chosen = field or (present[0] if present else None)
    if chosen is None or chosen not in present:
        raise UnsealError(f"the record holds no sealed {chosen.value if chosen else 'value'}")
    envelope = parse_envelope(sealed[chosen.value])
    context = context_from_body(doc, chosen)
    # 2. Authenticated decryption: fails for another record's envelope.
    plaintext = open_envelope(envelope, context, key)
    # 3. The plaintext is exactly the bytes the record's digest covers.
    computed = hashlib.sha256(plaintext).hexdigest()
    if computed != context.sha256:
        raise UnsealError(f"sealed {chosen.value} digest mismatch: record says {context.sha256}, computed {computed}")
    try:
        return chosen, orjson.loads(plaintext)
    except orjson.JSONDecodeError as exc:
        raise UnsealError(f"sealed {chosen.value} is not JSON") from exc


# -- the gateway side ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SealedValue:
    """What the audit stage puts into a record: the digest to record and the envelope to store."""

    sha256: str
    envelope: dict[str, Any]


class Sealer:
    """Seals raw values for the configured auditors; holds public keys only."""

    def __init__(self, origin: str, recipients: Sequence[SealPublicKey], fields: Iterable[SealedField]) -> None:
        """Preconditions: at least one recipient; ``origin`` is the log's origin."""
        if not recipients:
            raise KeyFormatError("sealing needs at least one recipient key")
        self._origin = origin
        self._recipients = tuple(recipients)
        self.fields = frozenset(fields)

    def seal_value(
        self, field: SealedField, value: Any, *, upstream: str | None, method: str | None, name: str | None
    ) -> SealedValue | None:
        """Seal ``value`` if ``field`` is configured; None when it is not, or has no canonical JSON form.

        Arguments are sealed as their RFC 8785 bytes (so the digest equals ``arguments_sha256``),
        results as compact JSON (so it equals the masking stage's ``raw_result_sha256``).
        """
        if field not in self.fields:
            return None
        try:
            plaintext = canonical_bytes(value) if field is SealedField.ARGUMENTS else orjson.dumps(value)
        except (CanonicalEncodingError, TypeError) as exc:
            _log.warning("raw %s of %s not sealed: %s", field.value, method, type(exc).__name__)
            return None
        digest = hashlib.sha256(plaintext).hexdigest()
        context = SealContext(self._origin, field, upstream, method, name, digest)
        return SealedValue(digest, render_envelope(seal(plaintext, context, self._recipients)))


def build_sealer(settings: SealRawSettings | None, origin: str) -> Sealer | None:
    """Load the recipients' public keys named in ``audit.seal_raw``; None when sealing is off.

    Raises:
        KeyFormatError: a recipient file is missing, unreadable or not a seal public key.
    """
    if settings is None:
        return None
    keys = [load_seal_public_key(path) for path in settings.recipients]
    return Sealer(origin, keys, (SealedField(f) for f in settings.what))
