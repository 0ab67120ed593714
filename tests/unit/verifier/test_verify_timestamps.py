"""Step 9 of the verifier: RFC 3161 tokens on checkpoints, each failure with its kind and tree size.

The tokens are real: OpenSSL's reference responder (``openssl ts -reply``, tests/servers/openssl_tsa.py)
signs them, because no public TSA is reachable from the test environment.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from logfactory import RING, T0, build, checkpoint_at
from tests.servers.openssl_tsa import OpenSslTsa, make_tsa_pki, running_tsa

from bastion.audit.entry import StoredCheckpoint, StoredTimestamp
from bastion.audit.timestamp_token import accept_reply, build_query, load_tsa_certificates
from bastion.verifier import Options, Report, TimestampTrust, verify_log
from bastion.verifier import ProblemKind as K

TSA_NAME = "http://tsa.test/"


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenSslTsa]:
    with running_tsa(tmp_path_factory.mktemp("tsa")) as served:
        yield served


@pytest.fixture(scope="module")
def trust(tsa: OpenSslTsa) -> TimestampTrust:
    return TimestampTrust(tuple(load_tsa_certificates(tsa.pki.root_cert.read_bytes())))


def stamp_of(tsa: OpenSslTsa, checkpoint: StoredCheckpoint) -> tuple[StoredTimestamp, datetime]:
    query = build_query(checkpoint.note)
    accepted = accept_reply(tsa.reply(query.der), query)
    gen_time = accepted.gen_time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return StoredTimestamp(checkpoint.origin, checkpoint.tree_size, TSA_NAME, accepted.token, gen_time), accepted.gen_time


def found(report: Report) -> list[tuple[K, int]]:
    return [(p.kind, p.position) for p in report.problems]


def test_every_stamped_checkpoint_is_counted_with_the_latest_tsa_time_when_tokens_verify(
    tsa: OpenSslTsa, trust: TimestampTrust
) -> None:
    entries, checkpoints = build()
    stamped = [stamp_of(tsa, c) for c in checkpoints]
    report = verify_log(entries, checkpoints, RING, timestamps=[s for s, _ in stamped], tsa=trust)
    assert report.ok, report.render_text()
    latest = max(t for _, t in stamped).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert (report.summary.timestamped_checkpoints, report.summary.latest_timestamp) == (3, latest)
    assert f"timestamps: 3 checkpoints carry a verified RFC 3161 token, latest TSA time {latest}\n" in report.render_text()
    summary = json.loads(report.to_json())["summary"]
    assert (summary["timestamped_checkpoints"], summary["latest_timestamp"]) == (3, latest)


def test_tokens_are_not_read_when_no_tsa_certificates_are_given() -> None:
    entries, checkpoints = build()
    garbage = StoredTimestamp(checkpoints[0].origin, 4, TSA_NAME, b"not a token", "2026-07-01T00:00:00.000Z")
    report = verify_log(entries, checkpoints, RING, timestamps=[garbage])
    assert report.ok
    assert report.summary.timestamped_checkpoints is None
    assert "timestamps:" not in report.render_text()


def test_bad_timestamp_at_its_tree_size_when_a_stored_token_is_altered(tsa: OpenSslTsa, trust: TimestampTrust) -> None:
    entries, checkpoints = build()
    stamps = [stamp_of(tsa, c)[0] for c in checkpoints]
    token = bytearray(stamps[1].token)
    token[-5] ^= 0x01  # inside the CMS signature
    stamps[1] = replace(stamps[1], token=bytes(token))
    report = verify_log(entries, checkpoints, RING, timestamps=stamps, tsa=trust)
    assert found(report) == [(K.BAD_TIMESTAMP, 8)]
    assert TSA_NAME in report.problems[0].reason
    assert report.summary.timestamped_checkpoints == 2


def test_timestamp_mismatch_when_a_genuine_token_of_another_checkpoint_is_stored_under_this_one(
    tsa: OpenSslTsa, trust: TimestampTrust
) -> None:
    entries, checkpoints = build()
    moved = replace(stamp_of(tsa, checkpoints[2])[0], tree_size=4)  # the token over size 12's note, filed at 4
    report = verify_log(entries, checkpoints, RING, timestamps=[moved], tsa=trust)
    assert found(report) == [(K.TIMESTAMP_MISMATCH, 4)]
    assert "imprint" in report.problems[0].reason
    assert report.summary.timestamped_checkpoints == 0


def test_bad_timestamp_for_every_token_when_the_tsa_is_not_trusted(tsa: OpenSslTsa, tmp_path: Path) -> None:
    entries, checkpoints = build()
    stamps = [stamp_of(tsa, c)[0] for c in checkpoints]
    stranger = TimestampTrust(tuple(load_tsa_certificates(make_tsa_pki(tmp_path, "Other TSA").root_cert.read_bytes())))
    report = verify_log(entries, checkpoints, RING, timestamps=stamps, tsa=stranger)
    assert found(report) == [(K.BAD_TIMESTAMP, 4), (K.BAD_TIMESTAMP, 8), (K.BAD_TIMESTAMP, 12)]
    assert report.summary.timestamped_checkpoints == 0 and report.summary.latest_timestamp is None


def test_timestamp_mismatch_when_the_checkpoint_is_dated_later_than_the_tsa_time_beyond_the_tolerance(
    tsa: OpenSslTsa, trust: TimestampTrust
) -> None:
    entries, _ = build()
    # Learn the TSA's clock from a probe, then date two notes 3 s and 60 s after it: later tokens
    # carry a genTime at or after the probe's, so the first stays within the 5 s tolerance.
    _, probe_time = stamp_of(tsa, checkpoint_at(entries, 4))
    offset = (probe_time - T0).total_seconds()
    within = checkpoint_at(entries, 4, signed_s=offset + 3)
    beyond = checkpoint_at(entries, 8, signed_s=offset + 60)
    stamps = [stamp_of(tsa, within)[0], stamp_of(tsa, beyond)[0]]
    patient = Options(max_seconds_between_checkpoints=1e9)  # the notes are dated months after the records
    report = verify_log(entries, [within, beyond], RING, timestamps=stamps, tsa=trust, options=patient)
    assert found(report) == [(K.TIMESTAMP_MISMATCH, 8)]
    assert "after the TSA time" in report.problems[0].reason


def test_token_over_a_heartbeat_note_matches_when_a_size_has_several_checkpoints(
    tsa: OpenSslTsa, trust: TimestampTrust
) -> None:
    entries, checkpoints = build()
    heartbeat = checkpoint_at(entries, 12, signed_s=60)
    assert heartbeat.note != checkpoints[2].note
    report = verify_log(entries, [*checkpoints, heartbeat], RING, timestamps=[stamp_of(tsa, heartbeat)[0]], tsa=trust)
    assert report.ok, report.render_text()
    assert report.summary.timestamped_checkpoints == 1


def test_timestamp_mismatch_when_no_checkpoint_of_the_token_size_is_stored(tsa: OpenSslTsa, trust: TimestampTrust) -> None:
    entries, checkpoints = build()
    orphan = stamp_of(tsa, checkpoints[1])[0]
    report = verify_log(entries, [checkpoints[0], checkpoints[2]], RING, timestamps=[orphan], tsa=trust)
    assert found(report) == [(K.TIMESTAMP_MISMATCH, 8)]
    assert "no checkpoint of this tree size" in report.problems[0].reason
