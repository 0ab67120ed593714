"""A checkpoint of origin O verifies only under a key the ring binds to O (``KeyRing.may_sign``)."""

from __future__ import annotations

import pytest
from logfactory import KEY, ORIGIN, RING, build, checkpoint_at, rewrite

from bastion.audit.keys import KeyFormatError, KeyRing, SigningKey, parse_key_ring, render_key_ring, render_vkey
from bastion.verifier import ProblemKind as K
from bastion.verifier import Report, verify_log

OTHER_ORIGIN = "gw.other/log"
OTHER_KEY = SigningKey(OTHER_ORIGIN, bytes([9]) * 32)
OPS_KEY = SigningKey("ops-2026", bytes([5]) * 32)
"""A key named at keygen after no origin at all."""


def found(report: Report) -> list[tuple[K, int]]:
    return [(p.kind, p.position) for p in report.problems]


def test_key_not_for_origin_when_another_origins_key_re_signs_a_rewritten_log() -> None:
    entries, _ = build()
    entries[5] = rewrite(entries[5], "mallory", rehash=True)
    forged = [checkpoint_at(entries, size, key=OTHER_KEY) for size in (4, 8, 12)]
    report = verify_log(entries, forged, KeyRing([KEY.public(), OTHER_KEY.public()]))
    assert found(report) == [(K.KEY_NOT_FOR_ORIGIN, 4), (K.KEY_NOT_FOR_ORIGIN, 8), (K.KEY_NOT_FOR_ORIGIN, 12)]
    reason = report.problems[0].reason
    assert f"signed by key {OTHER_ORIGIN}" in reason
    assert f"add origin={ORIGIN} to its key ring line" in reason


def test_checkpoints_verify_when_the_ring_binds_a_differently_named_key_with_origin_option() -> None:
    entries, _ = build()
    checkpoints = [checkpoint_at(entries, size, key=OPS_KEY) for size in (4, 8, 12)]
    ring = parse_key_ring(f"{render_vkey(OTHER_KEY.public())}\n{render_vkey(OPS_KEY.public())} origin={ORIGIN}\n")
    assert verify_log(entries, checkpoints, ring).ok
    unbound = KeyRing([OTHER_KEY.public(), OPS_KEY.public()])
    assert found(verify_log(entries, checkpoints, unbound))[0] == (K.KEY_NOT_FOR_ORIGIN, 4)


def test_key_not_for_origin_when_a_bound_key_signs_an_origin_outside_its_bindings() -> None:
    entries, _ = build(origin=OTHER_ORIGIN)
    checkpoints = [checkpoint_at(entries, 12, key=OPS_KEY)]
    ring = parse_key_ring(f"{render_vkey(OPS_KEY.public())} origin={ORIGIN}\n")
    report = verify_log(entries, checkpoints, ring)
    assert found(report) == [(K.KEY_NOT_FOR_ORIGIN, 12)]
    assert f"it is bound to origin={ORIGIN}" in report.problems[0].reason


def test_the_only_unbound_key_of_a_ring_signs_one_log_and_its_reader_log_whatever_their_name() -> None:
    # `make demo` keeps one key, named bastion-demo, for demo/bastion and demo/bastion/cli.
    entries = build(origin="demo/bastion")[0] + build(origin="demo/bastion/cli")[0]
    checkpoints = [checkpoint_at(entries[:12], 12, key=OPS_KEY), checkpoint_at(entries[12:], 12, key=OPS_KEY)]
    assert verify_log(entries, checkpoints, KeyRing([OPS_KEY.public()])).ok


def test_the_only_unbound_key_of_a_ring_cannot_vouch_for_a_second_log() -> None:
    # A shared store: gw-b's log rewritten and re-signed with the one key the auditor holds (gw-a's).
    entries = build(origin="gw-a/log")[0] + build(origin="gw-b/log")[0]
    checkpoints = [checkpoint_at(entries[:12], 12, key=OPS_KEY), checkpoint_at(entries[12:], 12, key=OPS_KEY)]
    report = verify_log(entries, checkpoints, KeyRing([OPS_KEY.public()]))
    assert [p.kind for p in report.problems] == [K.KEY_NOT_FOR_ORIGIN]
    assert "as the key ring's only key the log gw-a/log" in report.problems[0].reason


def test_a_gateway_key_signs_its_reader_origin_unless_another_key_claims_it() -> None:
    reader = f"{ORIGIN}/cli"
    entries, _ = build(origin=reader)
    checkpoints = [checkpoint_at(entries, 12)]
    assert verify_log(entries, checkpoints, KeyRing([KEY.public(), OTHER_KEY.public()])).ok
    claimed = parse_key_ring(f"{render_vkey(KEY.public())}\n{render_vkey(OPS_KEY.public())} origin={reader}\n")
    assert found(verify_log(entries, checkpoints, claimed)) == [(K.KEY_NOT_FOR_ORIGIN, 12)]
    forged = [checkpoint_at(entries, 12, key=OTHER_KEY)]
    assert found(verify_log(entries, forged, KeyRing([KEY.public(), OTHER_KEY.public()]))) == [
        (K.KEY_NOT_FOR_ORIGIN, 12)
    ]


def test_key_not_for_origin_when_the_trusted_checkpoint_is_signed_by_another_origins_key() -> None:
    entries, checkpoints = build()
    ring = KeyRing([KEY.public(), OTHER_KEY.public()])
    trusted = checkpoint_at(entries, 6, key=OTHER_KEY)
    assert found(verify_log(entries, checkpoints, ring, trusted=trusted)) == [(K.KEY_NOT_FOR_ORIGIN, 6)]
    assert verify_log(entries, checkpoints, RING, trusted=checkpoint_at(entries, 6)).ok


def test_key_ring_round_trips_origin_bindings_when_rendered() -> None:
    text = f"{render_vkey(OPS_KEY.public())} until=2027-01-01T00:00:00+00:00 origin={ORIGIN} origin={ORIGIN}/cli\n"
    ring = parse_key_ring(text)
    key = ring.lookup(OPS_KEY.name, OPS_KEY.public().key_id)
    assert key is not None and key.origins == (ORIGIN, f"{ORIGIN}/cli")
    assert render_key_ring(parse_key_ring(render_key_ring(ring))) == render_key_ring(ring)


@pytest.mark.parametrize("option", ["origin=", f"origin={ORIGIN} origin={ORIGIN}", "origins=x"])
def test_key_ring_raises_key_format_when_an_origin_option_is_empty_repeated_or_misspelt(option: str) -> None:
    with pytest.raises(KeyFormatError):
        parse_key_ring(f"{render_vkey(OPS_KEY.public())} {option}\n")
