"""RFC 3161 tokens over checkpoint notes: the query, the reply checks and offline verification.

The TSA is OpenSSL's reference responder (``openssl ts -reply``, tests/servers/openssl_tsa.py)
because no public TSA is reachable from the test environment; replies come from it unmodified,
and ``openssl ts -verify`` cross-checks that the bytes we keep are a token another implementation accepts.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import rfc3161_client
from cryptography import x509
from tests.servers.openssl_tsa import TSA_POLICY, OpenSslTsa, make_tsa_pki, running_tsa

from bastion.audit.timestamp_token import (
    TimestampError,
    TimestampMismatchError,
    accept_reply,
    build_query,
    load_tsa_certificates,
    note_digest,
    verify_token,
)

NOTE = "gw.example/log\n4\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\nbastion-time 2026-07-01T12:00:00.000Z\n\n— gw.example/log OAjaDF7p\n"
OTHER_NOTE = NOTE.replace("\n4\n", "\n5\n")


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenSslTsa]:
    with running_tsa(tmp_path_factory.mktemp("tsa")) as served:
        yield served


def roots_of(tsa: OpenSslTsa) -> list[x509.Certificate]:
    return load_tsa_certificates(tsa.pki.root_cert.read_bytes())


def test_query_asks_for_sha256_of_the_note_with_a_nonce_and_the_tsa_certificate() -> None:
    query = build_query(NOTE)
    parsed = rfc3161_client._rust.parse_timestamp_request(query.der)
    assert query.digest == hashlib.sha256(NOTE.encode("utf-8")).digest() == note_digest(NOTE)
    assert parsed.message_imprint.message == query.digest
    assert parsed.message_imprint.hash_algorithm.dotted_string == "2.16.840.1.101.3.4.2.1"
    assert parsed.nonce == query.nonce and parsed.cert_req is True
    assert build_query(NOTE).nonce != query.nonce


def test_reply_is_accepted_and_its_token_verifies_with_openssl_when_the_tsa_grants(
    tsa: OpenSslTsa, tmp_path: Path
) -> None:
    query = build_query(NOTE)
    before = datetime.now(UTC) - timedelta(seconds=2)
    accepted = accept_reply(tsa.reply(query.der), query, policy_oid=TSA_POLICY, roots=roots_of(tsa))
    assert before <= accepted.gen_time <= datetime.now(UTC) + timedelta(seconds=2)
    assert verify_token(accepted.token, NOTE, roots_of(tsa)) == accepted.gen_time
    # An independent implementation accepts the exact bytes we store, over the exact note bytes.
    (tmp_path / "note").write_bytes(NOTE.encode("utf-8"))
    (tmp_path / "token.der").write_bytes(accepted.token)
    checked = subprocess.run(
        ["openssl", "ts", "-verify", "-data", str(tmp_path / "note"), "-in", str(tmp_path / "token.der"), "-token_in",
         "-CAfile", str(tsa.pki.root_cert)],
        capture_output=True, text=True, check=False,
    )
    assert (checked.returncode, checked.stdout.strip()) == (0, "Verification: OK")


def test_reply_is_refused_as_a_mismatch_when_it_answers_another_query_of_the_same_note(tsa: OpenSslTsa) -> None:
    first, second = build_query(NOTE), build_query(NOTE)
    with pytest.raises(TimestampMismatchError, match="nonce"):
        accept_reply(tsa.reply(first.der), second)


def test_reply_is_refused_as_a_mismatch_when_it_covers_another_note(tsa: OpenSslTsa) -> None:
    query, other = build_query(NOTE), build_query(OTHER_NOTE)
    with pytest.raises(TimestampMismatchError, match="imprint"):
        accept_reply(tsa.reply(other.der), query)


def test_reply_is_refused_when_the_tsa_uses_another_policy(tsa: OpenSslTsa) -> None:
    query = build_query(NOTE)
    with pytest.raises(TimestampMismatchError, match="policy"):
        accept_reply(tsa.reply(query.der), query, policy_oid="1.2.3.4")


def test_reply_is_refused_when_the_tsa_rejects_the_request(tsa: OpenSslTsa, tmp_path: Path) -> None:
    # A SHA-1 query, which this TSA does not accept: OpenSSL answers with status "rejection".
    (tmp_path / "data").write_bytes(NOTE.encode("utf-8"))
    subprocess.run(
        ["openssl", "ts", "-query", "-data", str(tmp_path / "data"), "-sha1", "-out", str(tmp_path / "q.tsq")],
        check=True, capture_output=True,
    )
    with pytest.raises(TimestampError, match="did not grant"):
        accept_reply(tsa.reply((tmp_path / "q.tsq").read_bytes()), build_query(NOTE))


def test_reply_is_refused_when_roots_are_given_and_it_is_signed_by_another_tsa(
    tsa: OpenSslTsa, tmp_path: Path
) -> None:
    stranger = load_tsa_certificates(make_tsa_pki(tmp_path / "other", "Other TSA").root_cert.read_bytes())
    query = build_query(NOTE)
    with pytest.raises(TimestampError, match="signature") as refused:
        accept_reply(tsa.reply(query.der), query, roots=stranger)
    assert not isinstance(refused.value, TimestampMismatchError)


def test_reply_is_refused_when_it_is_not_der(tsa: OpenSslTsa) -> None:
    with pytest.raises(TimestampError, match="not a DER"):
        accept_reply(b"<html>busy</html>", build_query(NOTE))


def test_stored_token_is_bad_not_a_mismatch_when_any_signed_byte_is_flipped(tsa: OpenSslTsa) -> None:
    query = build_query(NOTE)
    token = accept_reply(tsa.reply(query.der), query).token
    roots = roots_of(tsa)
    imprint_at = token.index(query.digest)
    # A byte of the imprint, of the genTime region after it, and of the signature at the end.
    for position in (imprint_at + 3, imprint_at + len(query.digest) + 12, len(token) - 5):
        forged = bytearray(token)
        forged[position] ^= 0x01
        with pytest.raises(TimestampError) as caught:
            verify_token(bytes(forged), NOTE, roots)
        assert not isinstance(caught.value, TimestampMismatchError), position


def test_stored_token_is_a_mismatch_when_it_is_genuine_but_over_another_note(tsa: OpenSslTsa) -> None:
    query = build_query(OTHER_NOTE)
    token = accept_reply(tsa.reply(query.der), query).token
    with pytest.raises(TimestampMismatchError, match="imprint"):
        verify_token(token, NOTE, roots_of(tsa))
    assert verify_token(token, OTHER_NOTE, roots_of(tsa))


def test_stored_token_is_bad_when_its_tsa_does_not_chain_to_the_given_roots(tsa: OpenSslTsa, tmp_path: Path) -> None:
    query = build_query(NOTE)
    token = accept_reply(tsa.reply(query.der), query).token
    stranger = load_tsa_certificates(make_tsa_pki(tmp_path / "other", "Other TSA").root_cert.read_bytes())
    with pytest.raises(TimestampError, match="signature"):
        verify_token(token, NOTE, stranger)
    # A bundle is a set of anchors: the right root among strangers is enough.
    assert verify_token(token, NOTE, [*stranger, *roots_of(tsa)])


def test_certificate_bundle_is_refused_when_it_holds_no_certificate() -> None:
    with pytest.raises(TimestampError):
        load_tsa_certificates(b"")
    with pytest.raises(TimestampError):
        load_tsa_certificates(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_reply_is_refused_when_it_is_granted_but_carries_no_token() -> None:
    granted_empty = bytes.fromhex("3005" "3003020100")  # TimeStampResp { status granted } and nothing else
    with pytest.raises(TimestampError, match="no token"):
        accept_reply(granted_empty, build_query(NOTE))


def test_stored_token_is_bad_when_it_is_not_a_token_at_all(tsa: OpenSslTsa) -> None:
    for junk in (b"", b"not a token", bytes(300)):
        with pytest.raises(TimestampError) as caught:
            verify_token(junk, NOTE, roots_of(tsa))
        assert not isinstance(caught.value, TimestampMismatchError)
