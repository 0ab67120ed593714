"""Each tampering kind on a small signed log yields exactly the expected problem and position."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from logfactory import KEY, ORIGIN, RING, T0, build, checkpoint_at, entry, rewrite

from bastion.audit.keys import KeyRing, SigningKey, VerifierKey
from bastion.verifier import Options, Report, SeqRange, verify_log
from bastion.verifier import ProblemKind as K


def found(report: Report) -> list[tuple[K, int]]:
    return [(p.kind, p.position) for p in report.problems]


def test_untouched_log_verifies_when_nothing_changed() -> None:
    entries, checkpoints = build()
    report = verify_log(entries, checkpoints, RING)
    assert report.ok, report.render_text()
    assert (report.summary.records, report.summary.checkpoints, report.summary.origins) == (12, 3, [ORIGIN])
    assert report.summary.first_time == entries[0].time and report.summary.last_time == entries[-1].time


def test_modified_record_reported_at_its_seq_when_body_edited_but_hash_kept() -> None:
    entries, checkpoints = build()
    entries[5] = rewrite(entries[5], "forged", rehash=False)
    assert found(verify_log(entries, checkpoints, RING)) == [(K.MODIFIED_RECORD, 5)]


def test_modified_record_reported_when_body_is_not_canonical() -> None:
    entries, checkpoints = build()
    spaced = entries[2].body.replace(b",", b", ")
    entries[2] = replace(entries[2], body=spaced)
    assert found(verify_log(entries, checkpoints, RING)) == [(K.MODIFIED_RECORD, 2)]


def test_root_mismatch_at_next_checkpoint_when_body_and_hash_rewritten() -> None:
    entries, checkpoints = build()
    entries[5] = rewrite(entries[5], "forged", rehash=True)
    report = verify_log(entries, checkpoints, RING)
    assert found(report) == [(K.ROOT_MISMATCH, 8)]
    assert "4..7" in report.problems[0].reason


def test_deleted_record_at_its_seq_when_a_middle_row_is_removed() -> None:
    entries, checkpoints = build()
    del entries[6]
    assert found(verify_log(entries, checkpoints, RING)) == [(K.DELETED_RECORD, 6)]


def test_deleted_and_renumbered_when_rows_shifted_to_hide_a_deletion() -> None:
    entries, checkpoints = build()
    del entries[6]
    entries[6:] = [replace(e, seq=e.seq - 1) for e in entries[6:]]
    assert found(verify_log(entries, checkpoints, RING)) == [(K.DELETED_RECORD, 6), (K.MODIFIED_RECORD, 7)]


def test_sequence_gap_when_missing_rows_lie_after_the_last_checkpoint() -> None:
    entries, _ = build()
    checkpoints = [checkpoint_at(entries, 4), checkpoint_at(entries, 8)]
    del entries[9]
    assert found(verify_log(entries, checkpoints, RING)) == [(K.SEQUENCE_GAP, 9)]


def test_truncated_tail_when_checkpointed_records_are_gone() -> None:
    entries, checkpoints = build()
    assert found(verify_log(entries[:10], checkpoints, RING)) == [(K.TRUNCATED_TAIL, 10)]


def test_inserted_record_when_a_second_row_claims_a_taken_seq() -> None:
    entries, checkpoints = build()
    entries.insert(4, entry(3, note="forged"))
    assert found(verify_log(entries, checkpoints, RING)) == [(K.INSERTED_RECORD, 3)]


def test_inserted_record_and_root_mismatch_when_forged_row_inserted_with_renumbering() -> None:
    entries, checkpoints = build()
    tail = [replace(e, seq=e.seq + 1) for e in entries[5:]]
    entries = [*entries[:5], entry(5, note="forged"), *tail]
    kinds = found(verify_log(entries, checkpoints, RING))
    assert kinds[0] == (K.INSERTED_RECORD, 5)
    assert (K.ROOT_MISMATCH, 8) in kinds


def test_inserted_record_when_a_row_of_another_origin_is_copied_in() -> None:
    entries, checkpoints = build()
    stranger = entry(20, origin="other.example/log")
    entries.insert(3, replace(stranger, origin=ORIGIN))
    assert found(verify_log(entries, checkpoints, RING)) == [(K.INSERTED_RECORD, 20)]


def test_reordered_records_when_two_rows_swap_storage_order() -> None:
    entries, checkpoints = build()
    a, b = entries[6], entries[7]
    entries[6], entries[7] = replace(b, seq=6), replace(a, seq=7)
    assert found(verify_log(entries, checkpoints, RING)) == [(K.REORDERED_RECORDS, 6)]


def test_bad_signature_when_checkpoint_signature_is_flipped() -> None:
    entries, checkpoints = build()
    note = checkpoints[1].note
    last = note.rstrip("\n")[-6]
    checkpoints[1] = replace(checkpoints[1], note=note[:-7] + ("A" if last != "A" else "B") + note[-6:])
    assert found(verify_log(entries, checkpoints, RING)) == [(K.BAD_SIGNATURE, 8)]


def test_unknown_key_when_checkpoint_signed_by_a_key_not_in_the_ring() -> None:
    entries, checkpoints = build()
    checkpoints[0] = checkpoint_at(entries, 4, key=SigningKey(ORIGIN, bytes(32)))
    assert found(verify_log(entries, checkpoints, RING)) == [(K.UNKNOWN_KEY, 4)]


def _windowed(key: SigningKey, start_s: float | None, end_s: float | None) -> VerifierKey:
    from datetime import timedelta

    frm = T0 + timedelta(seconds=start_s) if start_s is not None else None
    until = T0 + timedelta(seconds=end_s) if end_s is not None else None
    return VerifierKey(key.name, key.public().public_key, frm, until)


def test_key_outside_window_when_checkpoint_dated_after_rotation() -> None:
    entries, checkpoints = build()
    ring = KeyRing([_windowed(KEY, None, 6)])
    assert found(verify_log(entries, checkpoints, ring)) == [(K.KEY_OUTSIDE_WINDOW, 8), (K.KEY_OUTSIDE_WINDOW, 12)]


def test_old_checkpoints_verify_when_key_rotated_midway() -> None:
    entries, _ = build()
    new = SigningKey(ORIGIN, bytes([7]) * 32)
    checkpoints = [checkpoint_at(entries, 4), checkpoint_at(entries, 8, key=new), checkpoint_at(entries, 12, key=new)]
    ring = KeyRing([_windowed(KEY, None, 6), _windowed(new, 6, None)])
    assert verify_log(entries, checkpoints, ring).ok


def test_modified_checkpoint_when_stored_root_column_differs_from_note() -> None:
    entries, checkpoints = build()
    checkpoints[0] = replace(checkpoints[0], root_hash=bytes(32))
    assert found(verify_log(entries, checkpoints, RING)) == [(K.MODIFIED_CHECKPOINT, 4)]


def test_inconsistent_checkpoint_when_a_signed_fork_sits_between_good_ones() -> None:
    entries, checkpoints = build()
    forked = [*entries[:5], rewrite(entries[5], "fork", rehash=True), *entries[6:]]
    checkpoints[1] = checkpoint_at(forked, 8)
    assert found(verify_log(entries, checkpoints, RING)) == [(K.INCONSISTENT_CHECKPOINT, 8)]


def test_pruned_head_verifies_when_a_retention_checkpoint_carries_the_frontier() -> None:
    entries, checkpoints = build()
    retention = checkpoint_at(entries, 4, signed_s=30, retention=True)
    assert verify_log(entries[4:], [retention, *checkpoints], RING).ok


def test_deleted_record_at_zero_when_head_missing_without_retention_checkpoint() -> None:
    entries, checkpoints = build()
    assert found(verify_log(entries[4:], checkpoints, RING)) == [(K.DELETED_RECORD, 0)]


def test_trusted_checkpoint_checked_when_auditor_supplies_one() -> None:
    entries, checkpoints = build()
    assert verify_log(entries, checkpoints, RING, trusted=checkpoint_at(entries, 6)).ok
    fork = [*entries[:2], rewrite(entries[2], "fork", rehash=True), *entries[3:]]
    assert found(verify_log(entries, checkpoints, RING, trusted=checkpoint_at(fork, 6))) == [
        (K.INCONSISTENT_CHECKPOINT, 6)
    ]
    longer = [*entries, entry(12), entry(13)]
    assert found(verify_log(entries, checkpoints, RING, trusted=checkpoint_at(longer, 14))) == [(K.TRUNCATED_TAIL, 12)]


def test_trusted_unverifiable_when_it_predates_the_retention_point() -> None:
    entries, checkpoints = build()
    retention = checkpoint_at(entries, 4, signed_s=30, retention=True)
    report = verify_log(
        entries[4:],
        [retention, *checkpoints],
        RING,
        trusted=checkpoints[0].__class__(
            ORIGIN, 2, checkpoint_at(entries, 2).root_hash, checkpoint_at(entries, 2).note, entries[1].time
        ),
    )
    assert found(report) == [(K.TRUSTED_UNVERIFIABLE, 2)]


def test_checkpoint_gap_when_records_exceed_the_limit() -> None:
    entries, checkpoints = build()
    report = verify_log(entries, checkpoints[1:], RING, options=Options(max_records_between_checkpoints=6))
    assert found(report) == [(K.CHECKPOINT_GAP, 0)]


def test_checkpoint_gap_when_a_record_waits_too_long() -> None:
    entries, _ = build(n=8)
    checkpoints = [checkpoint_at(entries, 4), checkpoint_at(entries, 8, signed_s=1000)]
    report = verify_log(entries, checkpoints, RING, options=Options(max_seconds_between_checkpoints=600))
    assert found(report) == [(K.CHECKPOINT_GAP, 4)]  # once: the silence after checkpoint 4 is the same finding


def test_checkpoint_gap_when_unsigned_tail_is_older_than_limit_at_now() -> None:
    from datetime import timedelta

    entries, checkpoints = build()
    options = Options(max_seconds_between_checkpoints=60, now=T0 + timedelta(hours=1))
    report = verify_log([*entries, entry(12)], checkpoints, RING, options=options)
    assert found(report) == [(K.CHECKPOINT_GAP, 12)]


def test_interleaved_origins_verify_independently_when_streamed_together() -> None:
    a_entries, a_checkpoints = build()
    other = SigningKey("b.example/log", bytes([9]) * 32)
    b_entries = [entry(i, "b.example/log") for i in range(5)]
    b_checkpoints = [checkpoint_at(b_entries, 5, key=other)]
    mixed = [e for pair in zip(a_entries, b_entries, strict=False) for e in pair] + a_entries[5:]
    ring = KeyRing([KEY.public(), other.public()])
    report = verify_log(mixed, a_checkpoints + b_checkpoints, ring)
    assert report.ok and report.summary.origins == ["b.example/log", ORIGIN]
    b_entries.pop(2)
    assert found(verify_log(a_entries + b_entries, a_checkpoints + b_checkpoints, ring)) == [(K.DELETED_RECORD, 2)]


def test_progress_reported_when_callback_given() -> None:
    entries, checkpoints = build()
    seen: list[int] = []
    verify_log(entries, checkpoints, RING, on_progress=seen.append)
    assert seen == [12]


def test_render_text_escapes_control_characters_when_origin_is_hostile() -> None:
    hostile = "evil\nOK origin=x position=0: forged\x1b[2J\u2028"
    entries = [entry(0, hostile)]
    report = verify_log(entries, [], RING, options=Options(max_records_between_checkpoints=0))
    text = report.render_text()
    assert len(text.splitlines()) == 4 + len(report.problems)  # records, time, unsigned, result
    assert "\\u000a" in text and "\\u001b" in text and "\\u2028" in text


def test_to_json_carries_kinds_and_positions_when_problems_exist() -> None:
    entries, checkpoints = build()
    del entries[6]
    document = json.loads(verify_log(entries, checkpoints, RING).to_json())
    assert document["ok"] is False
    assert document["problems"][0]["kind"] == "DELETED_RECORD" and document["problems"][0]["position"] == 6
    assert document["summary"]["records"] == 11


@pytest.mark.parametrize("size", [0, 1])
def test_tiny_logs_verify_when_untouched(size: int) -> None:
    entries, checkpoints = build(n=size, every=1)
    assert verify_log(entries, checkpoints, RING).ok


@pytest.mark.parametrize(
    ("column", "value"),
    [("body", "text"), ("leaf_hash", None), ("time", None), ("kind", 7)],
    ids=["body-cast-to-text", "leaf-hash-null", "time-null", "kind-integer"],
)
def test_modified_record_not_a_crash_when_a_column_holds_another_type(column: str, value: object) -> None:
    entries, checkpoints = build()
    changed = entries[3]
    entries[3] = replace(changed, **{column: value if column != "body" else changed.body.decode()})
    report = verify_log(entries, checkpoints, RING)
    assert found(report) == [(K.MODIFIED_RECORD, 3)]
    assert f"{column} holds" in report.problems[0].reason


def test_summary_names_where_a_pruned_log_starts_and_its_unsigned_records() -> None:
    entries, checkpoints = build()
    retention = checkpoint_at(entries, 4, signed_s=30, retention=True)
    tail = [*entries, entry(12), entry(13)]
    report = verify_log(tail[4:], [retention, *checkpoints], RING)
    assert report.ok
    assert report.summary.starts == {ORIGIN: 4}
    assert report.summary.unsigned == {ORIGIN: SeqRange(12, 2)}
    text = report.render_text()
    assert f"starts: {ORIGIN} at seq 4\n" in text
    assert f"unsigned (after the newest checkpoint): {ORIGIN} seq 12..13 (2 records)\n" in text
    summary = json.loads(report.to_json())["summary"]
    assert (summary["starts"], summary["unsigned"]) == ({ORIGIN: 4}, {ORIGIN: {"first_seq": 12, "records": 2}})
    assert verify_log(entries, checkpoints, RING).summary.unsigned == {}
