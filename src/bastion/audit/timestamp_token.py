"""RFC 3161 time-stamp tokens over checkpoint notes: the query, checking a TSA's reply, offline verification.

What a token covers is SHA-256 of the checkpoint's whole signed note as UTF-8 (body, blank line,
signature lines): the bytes a witness keeps, so ``openssl ts -verify -data <witness file>``
checks a stored token too. Parsing and the CMS signature check are rfc3161-client's (OpenSSL
underneath); this module adds what ties a token to one checkpoint. It does no I/O: asking TSAs
is audit/timestamping.py's, judging stored tokens is verifier/timestamps.py's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import rfc3161_client
from cryptography import x509
from rfc3161_client import HashAlgorithm, PKIStatus, TimestampRequestBuilder, TimeStampResponse, VerifierBuilder

from bastion.errors import VerificationError

SHA256_OID = x509.ObjectIdentifier("2.16.840.1.101.3.4.2.1")
_GRANTED = (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS)  # RFC 3161 §2.4.2: both carry a token


class TimestampError(VerificationError):
    """Raised when a TSA reply or a stored token does not hold up: malformed, not granted, or its
    CMS signature does not chain to a trusted TSA certificate (with the timeStamping key purpose)."""


class TimestampMismatchError(TimestampError):
    """Raised when a well-formed token is over another message (imprint) or answers another query (nonce, policy)."""


def note_digest(note: str) -> bytes:
    """SHA-256 of a checkpoint note's UTF-8 bytes: the message imprint a token must carry."""
    return hashlib.sha256(note.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class TimestampQuery:
    """One DER ``TimeStampReq`` (SHA-256 imprint, random nonce, certReq true) and what its reply must echo."""

    der: bytes
    nonce: int
    digest: bytes


def build_query(note: str) -> TimestampQuery:
    """Build the query for one checkpoint note.

    certReq makes the TSA embed its certificate, so a token verifies later with the roots alone.
    """
    request = (
        TimestampRequestBuilder()
        .data(note.encode("utf-8"))
        .hash_algorithm(HashAlgorithm.SHA256)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
    )
    nonce = request.nonce
    if nonce is None:  # the builder was asked for one; guard the invariant the reply check relies on
        raise TimestampError("rfc3161-client built a query without a nonce")
    return TimestampQuery(request.as_bytes(), nonce, request.message_imprint.message)


@dataclass(frozen=True, slots=True)
class AcceptedToken:
    """A token that passed the reply checks: its DER ``TimeStampToken`` and the TSA's genTime (UTC)."""

    token: bytes
    gen_time: datetime


def accept_reply(
    reply: bytes, query: TimestampQuery, *, policy_oid: str | None = None, roots: Sequence[x509.Certificate] = ()
) -> AcceptedToken:
    """Check a DER ``TimeStampResp`` against the query it answers and return its token.

    Steps: (1) it parses and its status is granted; (2) the imprint is SHA-256 of the note and the
    nonce is the query's; (3) the policy is ``policy_oid`` when one is required; (4) with
    ``roots``, the CMS signature chains to them (the same check as ``open_token``).

    Raises:
        TimestampMismatchError: step 2 or 3 failed.
        TimestampError: step 1 or 4 failed.
    """
    # (1)
    response = _parse_response(reply)
    if response.status not in _GRANTED:
        raise TimestampError(f"TSA did not grant the request: status {response.status} {response.status_string}")
    try:
        info = response.tst_info
    except ValueError as exc:  # granted, yet no token inside
        raise TimestampError(f"the reply carries no token: {exc}") from exc
    # (2)
    if _sha256_imprint(response) != query.digest:
        raise TimestampMismatchError("the imprint is not SHA-256 of this checkpoint's note")
    if info.nonce != query.nonce:
        raise TimestampMismatchError("the token answers another query (nonce differs)")
    # (3)
    if policy_oid is not None and info.policy.dotted_string != policy_oid:
        raise TimestampMismatchError(f"the token is under policy {info.policy.dotted_string}, not {policy_oid}")
    # (4)
    if roots:
        _check_signature(response, roots)
    return AcceptedToken(response.time_stamp_token(), info.gen_time)


@dataclass(frozen=True, slots=True)
class OpenedToken:
    """A stored token whose signature verified: the SHA-256 digest the TSA signed, and when."""

    digest: bytes
    gen_time: datetime


def open_token(token: bytes, roots: Sequence[x509.Certificate]) -> OpenedToken:
    """Verify a stored token's signature offline and return what it vouches for.

    The CMS signature must verify and the signer's certificate must chain to ``roots`` (valid at
    genTime, extendedKeyUsage critical timeStamping); the imprint must be a SHA-256 digest.

    Raises:
        TimestampMismatchError: the imprint is not SHA-256 (it cannot be over a note as Bastion hashes it).
        TimestampError: the token is altered, malformed, or signed by an untrusted TSA.
    """
    response = _parse_response(_granted_reply(token))
    # The signature before the imprint, so a forged imprint reads as a bad token, not as another checkpoint's.
    _check_signature(response, roots)
    return OpenedToken(_sha256_imprint(response), response.tst_info.gen_time)


def verify_token(token: bytes, note: str, roots: Sequence[x509.Certificate]) -> datetime:
    """Verify a stored token over ``note`` offline and return its genTime: the note existed no later than that.

    Raises:
        TimestampError: the signature does not verify (see ``open_token``).
        TimestampMismatchError: a genuine token, but over another note.
    """
    opened = open_token(token, roots)
    if opened.digest != note_digest(note):
        raise TimestampMismatchError("the imprint is not SHA-256 of this checkpoint's note")
    return opened.gen_time


def load_tsa_certificates(pem: bytes) -> list[x509.Certificate]:
    """Parse a PEM bundle of TSA root (and intermediate) certificates.

    Raises:
        TimestampError: the bundle holds no certificate or one does not parse.
    """
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise TimestampError(f"not a PEM certificate bundle: {exc}") from exc
    return certificates


def _parse_response(reply: bytes) -> TimeStampResponse:
    try:
        return rfc3161_client.decode_timestamp_response(reply)
    except ValueError as exc:
        raise TimestampError(f"not a DER time-stamp reply: {exc}") from exc


def _sha256_imprint(response: TimeStampResponse) -> bytes:
    imprint = response.tst_info.message_imprint
    if imprint.hash_algorithm != SHA256_OID:
        raise TimestampMismatchError(f"the imprint is not SHA-256 but {imprint.hash_algorithm.dotted_string}")
    return imprint.message


def _check_signature(response: TimeStampResponse, roots: Sequence[x509.Certificate]) -> None:
    # Every given certificate goes in as a trust anchor: OpenSSL's store still builds the chain
    # from the TSA's embedded certificate, so a bundle may hold roots and intermediates alike.
    try:
        verifier = VerifierBuilder(roots=list(roots)).build()  # ValueError when there is no root
        verifier.verify(response, response.tst_info.message_imprint.message)
    except (rfc3161_client.VerificationError, ValueError) as exc:
        raise TimestampError(f"signature does not verify against the TSA certificates: {exc}") from exc


def _granted_reply(token: bytes) -> bytes:
    """Wrap a bare ``TimeStampToken`` as ``TimeStampResp {status granted, token}``: rfc3161-client
    parses replies only, and the status is not signed, so the wrapper adds no claim."""
    status = b"\x30\x03\x02\x01\x00"  # PKIStatusInfo ::= SEQUENCE { status INTEGER 0 (granted) }
    return _der_sequence(status + token)


def _der_sequence(content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return b"\x30" + bytes([size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return b"\x30" + bytes([0x80 | len(length)]) + length + content
