"""A running writer signs a heartbeat at least every ``heartbeat_s``: silences longer than the limit are gaps."""

from __future__ import annotations

from datetime import timedelta

from logfactory import KEY, ORIGIN, RING, T0, build, checkpoint_at, entry

from bastion.audit.checkpoint import Checkpoint, render_time_extension, sign_checkpoint
from bastion.audit.entry import StoredCheckpoint
from bastion.verifier import Options, Report, verify_log
from bastion.verifier import ProblemKind as K

LIMIT = Options(max_seconds_between_checkpoints=600)
HOURS_2 = 2 * 3600


def found(report: Report) -> list[tuple[K, int]]:
    return [(p.kind, p.position) for p in report.problems]


def test_checkpoint_gap_when_two_hours_pass_between_checkpoints_without_a_heartbeat() -> None:
    entries, _ = build(n=8)
    checkpoints = [checkpoint_at(entries, 4), checkpoint_at(entries, 8), checkpoint_at(entries, 8, signed_s=HOURS_2)]
    report = verify_log(entries, checkpoints, RING, options=LIMIT)
    assert found(report) == [(K.CHECKPOINT_GAP, 8)]
    assert "no checkpoint for 7192 s after this one (limit 600 s)" in report.problems[0].reason


def test_silence_verifies_when_the_checkpoint_before_it_was_signed_at_shutdown() -> None:
    entries, _ = build(n=8)
    checkpoints = [
        checkpoint_at(entries, 4),
        checkpoint_at(entries, 8, closed=True),
        checkpoint_at(entries, 8, signed_s=HOURS_2),
    ]
    assert verify_log(entries, checkpoints, RING, options=LIMIT).ok


def test_heartbeats_within_the_limit_verify_when_the_log_is_idle() -> None:
    entries, _ = build(n=8)
    heartbeats = [checkpoint_at(entries, 8, signed_s=7.5 + 300 * i) for i in range(1, 25)]
    assert verify_log(entries, [checkpoint_at(entries, 4), checkpoint_at(entries, 8), *heartbeats], RING).ok


def test_checkpoint_gap_at_now_when_the_last_records_and_their_checkpoint_were_deleted() -> None:
    entries, checkpoints = build()  # checkpoints at 4, 8 and 12
    options = Options(max_seconds_between_checkpoints=600, now=T0 + timedelta(hours=1))
    assert found(verify_log(entries, checkpoints, RING)) == []
    report = verify_log(entries[:8], checkpoints[:2], RING, options=options)
    assert found(report) == [(K.CHECKPOINT_GAP, 8)]
    assert "the newest checkpoint is 3592 s old" in report.problems[0].reason


def test_now_verifies_when_the_newest_checkpoint_was_signed_at_shutdown() -> None:
    entries, _ = build()
    checkpoints = [checkpoint_at(entries, 4), checkpoint_at(entries, 8), checkpoint_at(entries, 12, closed=True)]
    options = Options(max_seconds_between_checkpoints=600, now=T0 + timedelta(days=30))
    assert verify_log(entries, checkpoints, RING, options=options).ok


def test_a_retention_checkpoint_is_no_heartbeat_when_pruning_ran_while_the_gateway_was_down() -> None:
    # Records 0..3, shutdown; `audit prune` an hour later; records 4..11 once the gateway is back at two hours.
    entries = [entry(i) for i in range(4)] + [entry(i, at_s=HOURS_2 + i) for i in range(4, 12)]
    retention = checkpoint_at(entries, 4, signed_s=3600, retention=True)
    after = [checkpoint_at(entries, 8, signed_s=HOURS_2 + 7.5), checkpoint_at(entries, 12, signed_s=HOURS_2 + 11.5)]
    closed = checkpoint_at(entries, 4, closed=True)
    assert verify_log(entries[4:], [closed, retention, *after], RING, options=LIMIT).ok
    crashed = checkpoint_at(entries, 4)
    assert found(verify_log(entries[4:], [crashed, retention, *after], RING, options=LIMIT)) == [
        (K.CHECKPOINT_GAP, 4)
    ]


def test_malformed_checkpoint_when_the_closing_line_carries_a_value() -> None:
    entries, _ = build(n=4)
    body = Checkpoint(ORIGIN, 4, checkpoint_at(entries, 4).root_hash, (render_time_extension(T0), "bastion-closed yes"))
    stored = StoredCheckpoint(ORIGIN, 4, body.root_hash, sign_checkpoint(body, KEY), "")
    report = verify_log(entries, [stored], RING)
    assert found(report) == [(K.MALFORMED_CHECKPOINT, 4)]
    assert "bastion-closed takes no value" in report.problems[0].reason
