"""What a store's searches match records by must be copies of the bodies (checklist steps 2c and 8b).

Rows come as a store hands them to the verifier: ``IndexedEntry`` (the record, its row's search
columns, an index row that is not a copy of that row, whether searches cannot find it) and
``StrayIndexRow``. Every case changes one thing in a log that verifies.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from logfactory import ORIGIN, RING, checkpoint_at, rewrite, stamp

from bastion.audit.canonical import canonical_bytes
from bastion.audit.entry import LogEntry, StoredCheckpoint
from bastion.audit.hashing import hash_leaf
from bastion.storage.base import IndexedEntry, SearchColumns, SearchIndexRow, StrayIndexRow, VerifiedRow
from bastion.verifier import ProblemKind as K
from bastion.verifier import Report, verify_log
from bastion.verifier.searched import Strays, stray_runs


def searchable(seq: int) -> LogEntry:
    """A record whose body carries every field the stores copy into search columns."""
    body = canonical_bytes({
        "origin": ORIGIN, "seq": seq, "time": stamp(seq), "kind": "request", "outcome": "ok",
        "who": {"subject": "alice" if seq % 2 == 0 else "bob"}, "what": {"name": f"tool-{seq % 3}"},
        "correlation": {"session_id": f"s-{seq // 4}"},
    })
    return LogEntry(ORIGIN, seq, stamp(seq), "request", body, hash_leaf(body))


def indexed(entry: LogEntry) -> IndexedEntry:
    """The entry as a store whose copies are all intact hands it over."""
    return IndexedEntry(entry, SearchColumns.from_body(entry.body), None, False)


def stored_log(n: int = 12) -> tuple[list[VerifiedRow], list[StoredCheckpoint]]:
    entries = [searchable(seq) for seq in range(n)]
    checkpoints = [checkpoint_at(entries, size) for size in (4, 8, n)]
    return [indexed(e) for e in entries], checkpoints


def found(report: Report) -> list[tuple[K, int]]:
    return [(p.kind, p.position) for p in report.problems]


def test_intact_copies_verify_and_an_export_without_them_is_not_judged_by_them() -> None:
    rows, checkpoints = stored_log()
    assert verify_log(rows, checkpoints, RING).ok
    exported = [row.entry for row in rows if isinstance(row, IndexedEntry)]  # no search columns at all
    assert verify_log(exported, checkpoints, RING).ok


@pytest.mark.parametrize("column", SearchColumns._fields)
def test_modified_record_names_the_column_when_a_stored_search_column_differs_from_the_body(column: str) -> None:
    rows, checkpoints = stored_log()
    row = rows[5]
    assert isinstance(row, IndexedEntry)
    rows[5] = row._replace(columns=row.columns._replace(**{column: "forged"}))
    report = verify_log(rows, checkpoints, RING)
    assert found(report) == [(K.MODIFIED_RECORD, 5)]
    assert report.problems[0].reason == f"stored columns differ from the body ({column})"


def test_modified_record_when_a_search_column_is_emptied_so_that_no_filter_finds_the_record() -> None:
    rows, checkpoints = stored_log()
    row = rows[2]
    assert isinstance(row, IndexedEntry)
    rows[2] = row._replace(columns=SearchColumns(None, None, None, None))
    report = verify_log(rows, checkpoints, RING)
    assert found(report) == [(K.MODIFIED_RECORD, 2)]
    assert "(subject, tool, session_id, outcome)" in report.problems[0].reason


def test_one_finding_names_time_and_search_columns_together() -> None:
    rows, checkpoints = stored_log()
    row = rows[7]
    assert isinstance(row, IndexedEntry)
    rows[7] = row._replace(entry=replace(row.entry, kind="response"), columns=row.columns._replace(tool="other"))
    report = verify_log(rows, checkpoints, RING)
    assert found(report) == [(K.MODIFIED_RECORD, 7)]
    assert report.problems[0].reason == "stored columns differ from the body (kind, tool)"


def test_an_index_row_that_is_not_a_copy_is_named_column_by_column() -> None:
    rows, checkpoints = stored_log()
    row = rows[3]
    assert isinstance(row, IndexedEntry)
    time = row.entry.time
    rows[3] = row._replace(index_row=SearchIndexRow(time, "request", "mallory", row.columns.tool, "s-0", "denied"))
    report = verify_log(rows, checkpoints, RING)
    assert found(report) == [(K.MODIFIED_RECORD, 3)]
    assert report.problems[0].reason == "stored columns differ from the body (search_index.subject, search_index.outcome)"


def test_a_record_hidden_from_searches_is_a_modified_record() -> None:
    rows, checkpoints = stored_log()
    row = rows[9]
    assert isinstance(row, IndexedEntry)
    rows[9] = row._replace(hidden=True)
    report = verify_log(rows, checkpoints, RING)
    assert found(report) == [(K.MODIFIED_RECORD, 9)]
    assert "hidden from search" in report.problems[0].reason


def test_a_modified_body_is_reported_once_and_its_search_columns_are_not_judged_by_it() -> None:
    rows, checkpoints = stored_log()
    row = rows[4]
    assert isinstance(row, IndexedEntry)
    forged = rewrite(row.entry, "forged", rehash=False)  # another body: none of the copied fields
    rows[4] = row._replace(entry=forged, hidden=True)
    report = verify_log(rows, checkpoints, RING)
    assert found(report) == [(K.MODIFIED_RECORD, 4)]
    assert report.problems[0].reason == "body does not hash to its stored leaf hash"


def test_rows_stored_out_of_order_are_not_compared_with_the_index_rows_of_their_stored_seqs() -> None:
    rows, checkpoints = stored_log()
    a, b = rows[6], rows[7]
    assert isinstance(a, IndexedEntry) and isinstance(b, IndexedEntry)
    # The index is keyed by the stored seq: its rows 6 and 7 still describe records 6 and 7.
    rows[6] = b._replace(entry=replace(b.entry, seq=6), index_row=SearchIndexRow(a.entry.time, a.entry.kind, *a.columns))
    rows[7] = a._replace(entry=replace(a.entry, seq=7), index_row=SearchIndexRow(b.entry.time, b.entry.kind, *b.columns))
    assert found(verify_log(rows, checkpoints, RING)) == [(K.REORDERED_RECORDS, 6)]


def test_stray_index_rows_are_reported_per_run_at_the_first_seq() -> None:
    rows, checkpoints = stored_log()
    rows += [StrayIndexRow(ORIGIN, seq) for seq in (20, 21, 22, 40)]
    report = verify_log(rows, checkpoints, RING)
    assert found(report) == [(K.MODIFIED_RECORD, 20), (K.MODIFIED_RECORD, 40)]
    assert report.problems[0].reason.startswith("search_index rows for seq 20..22 (3), but no record stored there")
    assert report.problems[1].reason.startswith("a search_index row for seq 40, but no record stored there")


def test_stray_index_rows_in_any_order_and_repeated_make_the_same_runs() -> None:
    """The walk keeps strays as runs merged as they come: a row may join, extend or bridge runs."""
    rows, checkpoints = stored_log()
    seqs = [40, 20, 22, 30, 21, 22, 31, 29, 41, 39, 100, 28, 26, 27, -3]
    expected = [(K.MODIFIED_RECORD, -3), (K.MODIFIED_RECORD, 20), (K.MODIFIED_RECORD, 26),
                (K.MODIFIED_RECORD, 39), (K.MODIFIED_RECORD, 100)]
    for order in (seqs, sorted(set(seqs)), sorted(seqs, reverse=True)):
        report = verify_log([*rows, *(StrayIndexRow(ORIGIN, seq) for seq in order)], checkpoints, RING)
        assert found(report) == expected
        assert "seq 26..31 (6)" in report.problems[2].reason


def test_stray_runs_are_held_as_runs_and_split_around_records_reported_missing() -> None:
    strays = Strays()
    for seq in (*range(100_000), *range(200_000, 99_999, -1)):
        strays.add(seq)
    assert strays._runs == [[0, 200_001]]
    assert stray_runs(strays, [(10, 20), (15, 30), (50, 51)]) == [(0, 10), (30, 20), (51, 199_950)]


def test_stray_index_rows_of_an_origin_with_no_record_at_all_are_reported_as_such() -> None:
    """What a store lists by its index rows alone (SQLite ``fetch_origins``): no record, no checkpoint."""
    rows, checkpoints = stored_log()
    rows += [StrayIndexRow("zz/forged", seq) for seq in range(3)]
    report = verify_log(rows, checkpoints, RING)
    assert [(p.kind, p.origin, p.position) for p in report.problems] == [(K.MODIFIED_RECORD, "zz/forged", 0)]
    assert report.problems[0].reason == (
        "search_index rows for seq 0..2 (3), but no record of this origin is stored at all: a log deleted past "
        "its index rows, or rows forged into the index under an origin of their own"
    )
    assert report.summary.origins == [ORIGIN, "zz/forged"]


def test_stray_index_rows_of_records_already_reported_missing_are_not_reported_again() -> None:
    rows, checkpoints = stored_log()
    del rows[5]  # a deletion that a signed checkpoint covers
    del rows[9:]  # the tail past the checkpoint at 8: truncated
    rows += [StrayIndexRow(ORIGIN, seq) for seq in (5, 10, 11, 12)]
    report = verify_log(rows, checkpoints, RING)
    assert found(report) == [(K.DELETED_RECORD, 5), (K.TRUNCATED_TAIL, 10), (K.MODIFIED_RECORD, 12)]


def test_stray_index_rows_before_a_head_deleted_without_retention_are_not_reported_again() -> None:
    rows, checkpoints = stored_log()
    rows = [*rows[3:], *(StrayIndexRow(ORIGIN, seq) for seq in range(3))]
    assert found(verify_log(rows, checkpoints, RING)) == [(K.DELETED_RECORD, 0)]


def test_stray_index_rows_reveal_a_tail_deleted_together_with_its_checkpoints() -> None:
    rows, checkpoints = stored_log()
    rows = [*rows[:8], *(StrayIndexRow(ORIGIN, seq) for seq in range(8, 12))]
    report = verify_log(rows, [c for c in checkpoints if c.tree_size <= 8], RING)
    assert found(report) == [(K.MODIFIED_RECORD, 8)]
    assert "seq 8..11 (4)" in report.problems[0].reason


def test_stray_index_rows_of_a_pruned_head_are_reported() -> None:
    """A prune deletes a record and its index row together: index rows behind the retention point were forged."""
    entries = [searchable(seq) for seq in range(12)]
    checkpoints = [checkpoint_at(entries, 4, retention=True), checkpoint_at(entries, 8), checkpoint_at(entries, 12)]
    rows: list[VerifiedRow] = [indexed(e) for e in entries[4:]]
    assert verify_log(rows, checkpoints, RING).ok
    rows.append(StrayIndexRow(ORIGIN, 1))
    assert found(verify_log(rows, checkpoints, RING)) == [(K.MODIFIED_RECORD, 1)]
