"""Tampering done straight to the database is caught by ``bastion audit verify``: exit 1, kind and position.

Each case writes a log through AuditLog, edits the tables with sqlite3 or asyncpg the way an
attacker with database access would, and runs the CLI. The untouched log must exit 0, also when
written under a burst with the writer's default cadence. Every case runs on SQLite and on
PostgreSQL (fresh schema per test, dropped afterwards), but for SQLite's own search index.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import pytest

from bastion.audit.canonical import canonical_bytes
from bastion.audit.checkpoint import Checkpoint, parse_checkpoint, parse_signed_note, sign_checkpoint
from bastion.audit.compact import Frontier
from bastion.audit.hashing import hash_leaf
from bastion.audit.keys import SigningKey, render_signing_key, render_vkey
from bastion.audit.log import AuditLog, CheckpointPolicy
from bastion.audit.record import AuditEvent, EventKind, Outcome
from bastion.cli.main import main
from bastion.storage import OpenMode, RecordQuery, open_store

ORIGIN = "gw.tamper/log"
KEY = SigningKey(ORIGIN, bytes(range(32)))
STRANGER = SigningKey(ORIGIN, bytes(range(100, 132)))
"""Same name as the log key, different key: its signatures carry another key id."""
NEIGHBOUR = SigningKey("gw.neighbour/log", bytes(range(50, 82)))
"""The key of another gateway's origin, which the auditor trusts for that origin only."""
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
T0 = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
AN_HOUR_LATER = (T0 + timedelta(hours=1)).isoformat()


class Db(Protocol):
    def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]: ...
    def execute(self, sql: str, *params: Any) -> None: ...


class SqliteDb:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as conn:
            return [tuple(row) for row in conn.execute(sql, params)]

    def execute(self, sql: str, *params: Any) -> None:
        with sqlite3.connect(self.path) as conn:
            conn.execute(sql, params)


class PostgresDb:
    def __init__(self, schema: str) -> None:
        self.schema = schema

    @staticmethod
    def _numbered(sql: str) -> str:
        counter = itertools.count(1)
        return "".join(f"${next(counter)}" if ch == "?" else ch for ch in sql)

    async def _run(self, sql: str, params: tuple[Any, ...], fetch: bool) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": self.schema})
        try:
            if fetch:
                return [tuple(row) for row in await conn.fetch(self._numbered(sql), *params)]
            await conn.execute(self._numbered(sql), *params)
            return []
        finally:
            await conn.close()

    def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return asyncio.run(self._run(sql, params, True))

    def execute(self, sql: str, *params: Any) -> None:
        asyncio.run(self._run(sql, params, False))


async def write_log(url: str, interactions: int = 5) -> None:
    """10 records through AuditLog; checkpoints at sizes 1, 5, 9 (every 4 records) and 10 (on close)."""
    store = await open_store(url)
    ticks = itertools.count()
    log = AuditLog(
        store,
        origin=ORIGIN,
        signing_key=KEY,
        clock=lambda: T0 + timedelta(seconds=next(ticks)),
        checkpoints=CheckpointPolicy(every_records=4, every_s=3600, heartbeat_s=3600),
    )
    await log.start()
    try:
        for i in range(interactions):
            who = "alice" if i % 2 == 0 else "bob"
            request = await log.append(
                AuditEvent(kind=EventKind.REQUEST, subject=who, method="tools/call", name="search", arguments={"q": i})
            )
            await log.append(
                AuditEvent(kind=EventKind.RESPONSE, outcome=Outcome.OK, subject=who, request_seq=request.seq)
            )
    finally:
        await log.aclose()
        await store.aclose()


async def write_burst(url: str, records: int) -> None:
    """``records`` appends at once through AuditLog with the writer's default cadence and the real clock."""
    store = await open_store(url)
    log = AuditLog(store, origin=ORIGIN, signing_key=KEY)
    await log.start()
    try:
        await asyncio.gather(
            *(log.append(AuditEvent(kind=EventKind.REQUEST, subject="load", arguments={"i": i})) for i in range(records))
        )
    finally:
        await log.aclose()
        await store.aclose()


def open_log(backend: str, tmp_path: Path, write: Callable[[str], Any]) -> Iterator[tuple[str, Db]]:
    """Write a log with ``write(url)`` on ``backend``; yield its URL and raw table access."""
    if backend == "sqlite":
        path = tmp_path / "audit.db"
        url = f"sqlite:///{path}"
        asyncio.run(write(url))
        yield url, SqliteDb(path)
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    url = f"{PG_DSN}?schema={schema}"
    try:
        asyncio.run(write(url))
        yield url, PostgresDb(schema)
    finally:
        PostgresDb("public").execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def stored_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Db]]:
    yield from open_log(request.param, tmp_path, write_log)


@pytest.fixture
def key_ring(tmp_path: Path) -> Path:
    path = tmp_path / "keys.txt"
    path.write_text(render_vkey(KEY.public()) + "\n")
    return path


def verify(
    url: str, keys: Path, capsys: pytest.CaptureFixture[str], *options: str
) -> tuple[int, list[tuple[str, int]], str]:
    """Run the CLI twice (JSON and text); return the exit code, (kind, position) pairs and the text report."""
    code = main(["audit", "verify", "--store", url, "--keys", str(keys), "--json", *options])
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is (code == 0)
    text_code = main(["audit", "verify", "--store", url, "--keys", str(keys), *options])
    text = capsys.readouterr().out
    assert text_code == code
    return code, [(p["kind"], p["position"]) for p in report["problems"]], text


# -- tampering, as an attacker with write access to the tables would do it --------------------------------


def modify_body(db: Db) -> None:
    body = bytes(db.fetch("SELECT body FROM records WHERE seq = 3")[0][0])
    db.execute("UPDATE records SET body = ? WHERE seq = 3", body.replace(b'"bob"', b'"eve"'))


def delete_record(db: Db) -> None:
    db.execute("DELETE FROM records WHERE seq = 3")


def insert_forged_record(db: Db) -> None:
    """Make room at seq 3 by renumbering the rows above it, then insert a well-hashed forgery there."""
    db.execute("UPDATE records SET seq = -seq - 1 WHERE seq >= 3")
    db.execute("UPDATE records SET seq = -seq WHERE seq < 0")
    original = db.fetch("SELECT time, kind FROM records WHERE seq = 4")[0]
    body = canonical_bytes(
        {
            "schema": "bastion.audit/1",
            "origin": ORIGIN,
            "seq": 3,
            "time": original[0],
            "kind": original[1],
            "who": {"subject": "mallory"},
        }
    )
    db.execute(
        "INSERT INTO records (origin, seq, time, kind, body, leaf_hash) VALUES (?, ?, ?, ?, ?, ?)",
        ORIGIN,
        3,
        original[0],
        original[1],
        body,
        hash_leaf(body),
    )


def reorder_records(db: Db) -> None:
    """Swap the contents of rows 3 and 4, search columns included (the seq column stays): both records
    remain, out of order."""
    columns = "time, kind, body, leaf_hash, subject, tool, session_id, outcome"
    rows = {r[0]: r[1:] for r in db.fetch(f"SELECT seq, {columns} FROM records WHERE seq IN (3, 4)")}
    assignments = ", ".join(f"{column} = ?" for column in columns.split(", "))
    for seq, other in ((3, 4), (4, 3)):
        db.execute(f"UPDATE records SET {assignments} WHERE seq = ?", *rows[other], seq)


def truncate_tail(db: Db) -> None:
    db.execute("DELETE FROM records WHERE seq >= 7")


def delete_head(db: Db) -> None:
    """Delete the oldest records the way a pruning would, but without a signed retention checkpoint."""
    db.execute("DELETE FROM records WHERE seq < 5")


def corrupt_signature(db: Db) -> None:
    note = db.fetch("SELECT note FROM checkpoints WHERE tree_size = 5")[0][0]
    text, _, signature_line = note[:-1].rpartition("\n")
    prefix, _, payload = signature_line.rpartition(" ")
    raw = bytearray(base64.b64decode(payload))
    raw[-1] ^= 0x01
    forged = f"{text}\n{prefix} {base64.b64encode(bytes(raw)).decode()}\n"
    db.execute("UPDATE checkpoints SET note = ? WHERE tree_size = 5", forged)


def sign_with_unknown_key(db: Db) -> None:
    note = db.fetch("SELECT note FROM checkpoints WHERE tree_size = 5")[0][0]
    checkpoint = parse_checkpoint(parse_signed_note(note).text)
    db.execute("UPDATE checkpoints SET note = ? WHERE tree_size = 5", sign_checkpoint(checkpoint, STRANGER))


def delete_unsigned_record(db: Db) -> None:
    """Delete the checkpoints after size 5, then record 8: no signature covers the missing seq."""
    db.execute("DELETE FROM checkpoints WHERE tree_size > 5")
    db.execute("DELETE FROM records WHERE seq = 8")


def delete_tail_with_its_checkpoints(db: Db) -> None:
    """Delete the newest records and every checkpoint that signed them: nothing in the tables disagrees."""
    db.execute("DELETE FROM checkpoints WHERE tree_size > 5")
    db.execute("DELETE FROM records WHERE seq >= 5")
    if isinstance(db, SqliteDb):  # else the index rows left behind give it away
        db.execute("DELETE FROM search_index WHERE seq >= 5")


def delete_checkpoints_and_head_row(db: Db) -> None:
    """Delete every checkpoint and the head row: the records left look like a log never signed."""
    db.execute("DELETE FROM checkpoints")
    db.execute("DELETE FROM log_heads")


CASES: list[tuple[Callable[[Db], None], list[tuple[str, int]], tuple[str, ...]]] = [
    (modify_body, [("MODIFIED_RECORD", 3)], ()),
    (delete_record, [("DELETED_RECORD", 3)], ()),
    # The forgery is stored first at seq 3, so it enters the tree: its search columns, left empty (and
    # on SQLite its index row, the original's), differ from its body, the original becomes the duplicate,
    # the renumbered rows show from seq 4, and the next checkpoint's root no longer rebuilds.
    (
        insert_forged_record,
        [("MODIFIED_RECORD", 3), ("INSERTED_RECORD", 3), ("MODIFIED_RECORD", 4), ("ROOT_MISMATCH", 5)],
        (),
    ),
    (reorder_records, [("REORDERED_RECORDS", 3)], ()),
    (truncate_tail, [("TRUNCATED_TAIL", 7)], ()),
    (delete_head, [("DELETED_RECORD", 0)], ()),
    (corrupt_signature, [("BAD_SIGNATURE", 5)], ()),
    (sign_with_unknown_key, [("UNKNOWN_KEY", 5)], ()),
    (delete_unsigned_record, [("SEQUENCE_GAP", 8)], ()),
    # Only the missing heartbeat shows it: the newest checkpoint left is an hour old and no shutdown.
    (delete_tail_with_its_checkpoints, [("CHECKPOINT_GAP", 5)], ("--now", AN_HOUR_LATER)),
    # Listed by its records, the origin is walked (not refused for want of a head or checkpoint).
    (delete_checkpoints_and_head_row, [("CHECKPOINT_GAP", 0)], ("--now", AN_HOUR_LATER)),
]


def test_verify_exit_0_when_the_log_is_untouched(
    stored_log: tuple[str, Db], key_ring: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = stored_log
    code, problems, text = verify(url, key_ring, capsys)
    assert (code, problems) == (0, [])
    assert text.startswith(f"records: 10  checkpoints: 4  origins: {ORIGIN}\n")


def test_verify_exit_0_when_the_untouched_log_is_checked_an_hour_after_its_shutdown(
    stored_log: tuple[str, Db], key_ring: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = stored_log
    assert verify(url, key_ring, capsys, "--now", AN_HOUR_LATER)[:2] == (0, [])


@pytest.mark.parametrize(("tamper", "expected", "options"), CASES, ids=[case[0].__name__ for case in CASES])
def test_verify_exit_1_names_reason_and_position_when_the_database_is_tampered(
    stored_log: tuple[str, Db],
    key_ring: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: Callable[[Db], None],
    expected: list[tuple[str, int]],
    options: tuple[str, ...],
) -> None:
    url, db = stored_log
    tamper(db)
    code, problems, text = verify(url, key_ring, capsys, *options)
    assert code == 1
    assert problems == expected
    kind, position = expected[0]
    assert f"{kind} origin={ORIGIN} position={position}: " in text


def test_verify_exit_0_when_the_head_was_pruned_behind_a_retention_checkpoint(
    stored_log: tuple[str, Db], key_ring: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, db = stored_log
    key_file = tmp_path / "gw.key"
    key_file.write_text(render_signing_key(KEY))
    assert main(["audit", "prune", "--store", url, "--origin", ORIGIN, "--before", "5", "--key", str(key_file)]) == 0
    assert "pruned 5 records" in capsys.readouterr().out
    assert db.fetch("SELECT min(seq), count(*) FROM records") == [(5, 5)]
    code, problems, text = verify(url, key_ring, capsys)
    assert (code, problems) == (0, [])
    assert text.startswith(f"records: 5  checkpoints: 5  origins: {ORIGIN}\n")


def test_verify_exit_1_key_not_for_origin_when_another_origins_key_re_signs_a_rewritten_log(
    stored_log: tuple[str, Db], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An attacker holding the neighbour gateway's key rewrites record 3 and re-signs every checkpoint."""
    url, db = stored_log
    ring = tmp_path / "two-gateways.txt"
    ring.write_text(render_vkey(KEY.public()) + "\n" + render_vkey(NEIGHBOUR.public()) + "\n")
    body = json.loads(bytes(db.fetch("SELECT body FROM records WHERE seq = 3")[0][0]))
    forged = canonical_bytes({**body, "who": {"subject": "mallory"}})
    db.execute("UPDATE records SET body = ?, leaf_hash = ?, subject = 'mallory' WHERE seq = 3", forged, hash_leaf(forged))
    if isinstance(db, SqliteDb):
        db.execute("UPDATE search_index SET subject = 'mallory' WHERE seq = 3")
    leaves = [bytes(h) for (h,) in db.fetch("SELECT leaf_hash FROM records ORDER BY seq")]
    for (note,) in db.fetch("SELECT note FROM checkpoints"):
        signed = parse_checkpoint(parse_signed_note(note).text)
        frontier = Frontier()
        for leaf in leaves[: signed.tree_size]:
            frontier.append(leaf)
        resigned = sign_checkpoint(Checkpoint(ORIGIN, signed.tree_size, frontier.root(), signed.extensions), NEIGHBOUR)
        db.execute("UPDATE checkpoints SET note = ?, root_hash = ? WHERE note = ?", resigned, frontier.root(), note)
    code, problems, text = verify(url, ring, capsys)
    assert (code, problems) == (1, [("KEY_NOT_FOR_ORIGIN", size) for size in (1, 5, 9, 10)])
    assert f"add origin={ORIGIN} to its key ring line" in text


def test_verify_exit_1_modified_record_not_a_traceback_when_a_sqlite_column_changes_type(
    tmp_path: Path, key_ring: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite keeps a column's type per value: ``CAST(body AS TEXT)`` hands the reader a str for one row."""
    path = tmp_path / "audit.db"
    asyncio.run(write_log(f"sqlite:///{path}"))
    SqliteDb(path).execute("UPDATE records SET body = CAST(body AS TEXT) WHERE seq = 3")
    code, problems, text = verify(f"sqlite:///{path}", key_ring, capsys)
    assert (code, problems) == (1, [("MODIFIED_RECORD", 3)])
    assert "body holds str, not bytes" in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_verify_exit_0_with_default_limits_when_an_untouched_log_was_written_under_a_burst(
    backend: str, tmp_path: Path, key_ring: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The writer's default cadence must fit the verifier's default limits, also when batches are large."""
    for url, db in open_log(backend, tmp_path, lambda url: write_burst(url, 5000)):
        assert db.fetch("SELECT count(*) FROM records") == [(5000,)]
        code, problems, _ = verify(url, key_ring, capsys, "--now")
        assert (code, problems) == (0, [])


# -- what searches read: the search columns, and on SQLite the search index ---------------------------------

SEARCH_COLUMNS = ("subject", "tool", "session_id", "outcome")


def search(url: str, **filters: Any) -> list[int]:
    """The seqs ``bastion audit search`` would show for ``filters``, newest first."""

    async def run() -> list[int]:
        store = await open_store(url, OpenMode.READ_ONLY)
        try:
            return [entry.seq for entry in await store.search_entries(RecordQuery(**filters))]
        finally:
            await store.aclose()

    return asyncio.run(run())


@pytest.fixture
def sqlite_log(tmp_path: Path) -> Iterator[tuple[str, Db]]:
    yield from open_log("sqlite", tmp_path, write_log)


@pytest.mark.parametrize("column", SEARCH_COLUMNS)
def test_verify_exit_1_modified_record_naming_the_column_when_a_search_column_of_a_record_is_changed(
    stored_log: tuple[str, Db], key_ring: Path, capsys: pytest.CaptureFixture[str], column: str
) -> None:
    url, db = stored_log
    db.execute(f"UPDATE records SET {column} = 'forged' WHERE seq = 3")
    code, problems, text = verify(url, key_ring, capsys)
    assert (code, problems) == (1, [("MODIFIED_RECORD", 3)])
    assert f"MODIFIED_RECORD origin={ORIGIN} position=3: stored columns differ from the body ({column})\n" in text


def test_verify_exit_1_when_a_record_is_hidden_from_a_search_by_its_subject(
    stored_log: tuple[str, Db], key_ring: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attacker edits what searches read: the record's row on PostgreSQL, the index row on SQLite."""
    url, db = stored_log
    assert search(url, subject="bob") == [7, 6, 3, 2]
    table, column = ("search_index", "search_index.subject") if isinstance(db, SqliteDb) else ("records", "subject")
    db.execute(f"UPDATE {table} SET subject = 'alice' WHERE seq = 2")
    assert search(url, subject="bob") == [7, 6, 3]
    code, problems, text = verify(url, key_ring, capsys)
    assert (code, problems) == (1, [("MODIFIED_RECORD", 2)])
    assert f"position=2: stored columns differ from the body ({column})\n" in text


@pytest.mark.parametrize("column", ("time", "kind", *SEARCH_COLUMNS))
def test_verify_exit_1_sqlite_modified_record_naming_the_column_when_a_search_index_row_is_changed(
    sqlite_log: tuple[str, Db], key_ring: Path, capsys: pytest.CaptureFixture[str], column: str
) -> None:
    url, db = sqlite_log
    db.execute(f"UPDATE search_index SET {column} = 'forged' WHERE seq = 3")
    code, problems, text = verify(url, key_ring, capsys)
    assert (code, problems) == (1, [("MODIFIED_RECORD", 3)])
    assert f"position=3: stored columns differ from the body (search_index.{column})\n" in text


def test_verify_exit_0_sqlite_for_records_not_filed_yet_and_1_for_a_filed_one_without_its_index_row(
    sqlite_log: tuple[str, Db], key_ring: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, db = sqlite_log
    # What a crash before filing leaves: searches read the records past the watermark themselves.
    db.execute("DELETE FROM search_index WHERE seq >= 6")
    db.execute("UPDATE search_filed SET through = 5")
    assert search(url, subject="bob") == [7, 6, 3, 2]
    assert verify(url, key_ring, capsys)[:2] == (0, [])
    db.execute("DELETE FROM search_index WHERE seq = 2")  # at or below the watermark: searches read only the index
    assert search(url, subject="bob") == [7, 6, 3]
    code, problems, text = verify(url, key_ring, capsys)
    assert (code, problems) == (1, [("MODIFIED_RECORD", 2)])
    assert "position=2: no search_index row, the only row searches read for this record: hidden from search\n" in text


def test_verify_exit_0_sqlite_after_a_prune_and_1_when_a_retained_record_then_loses_its_index_row(
    sqlite_log: tuple[str, Db], key_ring: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, db = sqlite_log
    key_file = tmp_path / "gw.key"
    key_file.write_text(render_signing_key(KEY))
    assert main(["audit", "prune", "--store", url, "--origin", ORIGIN, "--before", "5", "--key", str(key_file)]) == 0
    capsys.readouterr()
    assert db.fetch("SELECT min(seq), count(*) FROM search_index") == [(5, 5)]
    assert verify(url, key_ring, capsys)[:2] == (0, [])
    db.execute("DELETE FROM search_index WHERE seq = 7")
    assert verify(url, key_ring, capsys)[:2] == (1, [("MODIFIED_RECORD", 7)])


def test_verify_exit_1_sqlite_when_index_rows_are_forged_for_records_that_do_not_exist(
    sqlite_log: tuple[str, Db], key_ring: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """They take the first places of a search, which reads on past them; they are traces of deleted records or forgeries."""
    url, db = sqlite_log
    for seq in (20, 21):
        db.execute("INSERT INTO search_index (origin, seq, time, kind, subject) VALUES (?, ?, '2099-01-01T00:00:00.000Z',"
                   " 'request', 'bob')", ORIGIN, seq)
    assert search(url, subject="bob", limit=2) == [7, 6]
    code, problems, text = verify(url, key_ring, capsys)
    assert (code, problems) == (1, [("MODIFIED_RECORD", 20)])
    assert "position=20: search_index rows for seq 20..21 (2), but no record stored there" in text


def test_verify_exit_1_sqlite_when_index_rows_are_forged_under_an_origin_with_nothing_else_stored(
    sqlite_log: tuple[str, Db], key_ring: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No record, head or checkpoint lists the origin: its index rows do. Newest of all, they would
    take every place of a search's page if searches did not read on past them."""
    url, db = sqlite_log
    for seq in range(5):
        db.execute("INSERT INTO search_index (origin, seq, time, kind, subject) VALUES ('zz/forged', ?,"
                   " '2099-01-01T00:00:00.000Z', 'request', 'bob')", seq)
    assert search(url, limit=5) == [9, 8, 7, 6, 5]
    assert search(url, subject="bob", limit=5) == [7, 6, 3, 2]
    reason = ("position=0: search_index rows for seq 0..4 (5), but no record of this origin is stored at all: "
              "a log deleted past its index rows, or rows forged into the index under an origin of their own\n")
    code, problems, text = verify(url, key_ring, capsys)
    assert (code, problems) == (1, [("MODIFIED_RECORD", 0)])
    assert text.startswith(f"records: 10  checkpoints: 4  origins: {ORIGIN}, zz/forged\n")
    assert f"MODIFIED_RECORD origin=zz/forged {reason}" in text
    # Named, the origin is walked as well; a run over another origin checks that origin's rows only.
    assert verify(url, key_ring, capsys, "--origin", "zz/forged")[:2] == (1, [("MODIFIED_RECORD", 0)])
    assert verify(url, key_ring, capsys, "--origin", ORIGIN)[:2] == (0, [])


def test_verify_exit_1_sqlite_when_the_tail_and_its_checkpoints_are_deleted_but_their_index_rows_are_not(
    sqlite_log: tuple[str, Db], key_ring: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unlike ``delete_tail_with_its_checkpoints``, no --now is needed: the index rows left behind tell."""
    url, db = sqlite_log
    db.execute("DELETE FROM checkpoints WHERE tree_size > 5")
    db.execute("DELETE FROM records WHERE seq >= 5")
    code, problems, text = verify(url, key_ring, capsys)
    assert (code, problems) == (1, [("MODIFIED_RECORD", 5)])
    assert "search_index rows for seq 5..9 (5)" in text
