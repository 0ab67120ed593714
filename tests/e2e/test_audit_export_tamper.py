"""An export is checked against itself too: ``bastion audit verify --export`` on edited files.

Two origins are written through AuditLog into one SQLite store and exported with
``write_export``; each test edits the JSON Lines file the way whoever handles it could, and runs
the CLI. Every exported record must be signed, the header and the closing ``origin`` lines must
agree with the lines held, and an export that starts mid-log says where.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bastion.audit.canonical import canonical_bytes
from bastion.audit.export import ExportStats, ExportWindow, write_export
from bastion.audit.hashing import hash_leaf
from bastion.audit.keys import SigningKey, render_vkey
from bastion.audit.log import AuditLog, CheckpointPolicy
from bastion.audit.record import AuditEvent, EventKind
from bastion.cli.main import main
from bastion.errors import StorageError
from bastion.storage import open_store

A = SigningKey("gw.a/log", bytes(range(32)))
B = SigningKey("gw.b/log", bytes(range(1, 33)))
T0 = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
Line = dict[str, Any]
WHOLE_LOG = ExportWindow()


async def write_origin(url: str, key: SigningKey, start: datetime) -> None:
    """10 records of origin ``key.name``, one clock second apart; checkpoints at 1, 5, 9 and 10 (on close)."""
    store = await open_store(url)
    ticks = itertools.count()
    log = AuditLog(
        store,
        origin=key.name,
        signing_key=key,
        clock=lambda: start + timedelta(seconds=next(ticks)),
        checkpoints=CheckpointPolicy(every_records=4, every_s=3600, heartbeat_s=3600),
    )
    await log.start()
    try:
        for i in range(10):
            await log.append(AuditEvent(kind=EventKind.REQUEST, subject="alice", arguments={"q": i}))
    finally:
        await log.aclose()
        await store.aclose()


async def export_to(url: str, origins: list[str], window: ExportWindow, out: Path) -> ExportStats:
    store = await open_store(url)
    try:
        with out.open("x", encoding="utf-8") as handle:
            return await write_export(store, origins, window, handle)
    finally:
        await store.aclose()


@dataclass
class Exported:
    db: Path
    url: str
    keys: Path
    out: Path

    def export(self, window: ExportWindow = WHOLE_LOG, origins: tuple[str, ...] = (A.name, B.name)) -> ExportStats:
        self.out.unlink(missing_ok=True)
        return asyncio.run(export_to(self.url, list(origins), window, self.out))

    def lines(self) -> list[Line]:
        return [json.loads(line) for line in self.out.read_text().splitlines()]

    def rewrite(self, edit: Callable[[list[Line]], list[Line]]) -> None:
        self.out.write_text("".join(json.dumps(line) + "\n" for line in edit(self.lines())))

    def times(self, origin: str) -> list[str]:
        with sqlite3.connect(self.db) as conn:
            return [t for (t,) in conn.execute("SELECT time FROM records WHERE origin = ? ORDER BY seq", (origin,))]


@pytest.fixture
def exported(tmp_path: Path) -> Exported:
    db = tmp_path / "audit.db"
    url = f"sqlite:///{db}"
    asyncio.run(write_origin(url, A, T0))
    asyncio.run(write_origin(url, B, T0 + timedelta(days=1)))
    keys = tmp_path / "keys.txt"
    keys.write_text(render_vkey(A.public()) + "\n" + render_vkey(B.public()) + "\n")
    result = Exported(db, url, keys, tmp_path / "export.jsonl")
    result.export()
    return result


def verify(exported: Exported, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[tuple[str, str, int]], str]:
    """Run ``verify --export`` (JSON, then text); return the exit code, (kind, origin, position) and the text."""
    code = main(["audit", "verify", "--export", str(exported.out), "--keys", str(exported.keys), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert main(["audit", "verify", "--export", str(exported.out), "--keys", str(exported.keys)]) == code
    problems = [(p["kind"], p["origin"], p["position"]) for p in report["problems"]]
    return code, problems, capsys.readouterr().out


def without(lines: list[Line], drop: Callable[[Line], bool]) -> list[Line]:
    return [line for line in lines if not drop(line)]


def test_untouched_export_verifies_when_every_origin_closes_with_its_counts(
    exported: Exported, capsys: pytest.CaptureFixture[str]
) -> None:
    closing = [line for line in exported.lines() if line["type"] == "origin"]
    assert closing == [
        {"type": "origin", "origin": origin, "records": 10, "checkpoints": 4, "timestamps": 0}
        for origin in (A.name, B.name)
    ]
    code, problems, text = verify(exported, capsys)
    assert (code, problems) == (0, [])
    assert text.startswith(f"records: 20  checkpoints: 8  origins: {A.name}, {B.name}\n")


def test_inconsistent_export_when_the_header_names_no_origin(
    exported: Exported, capsys: pytest.CaptureFixture[str]
) -> None:
    exported.rewrite(lambda lines: [{**lines[0], "origins": []}, *lines[1:]])
    code, problems, text = verify(exported, capsys)
    assert (code, problems) == (1, [("INCONSISTENT_EXPORT", A.name, 0), ("INCONSISTENT_EXPORT", B.name, 0)])
    assert "records: 20" in text  # the lines were verified all the same


def test_inconsistent_export_when_every_line_of_one_origin_was_removed(
    exported: Exported, capsys: pytest.CaptureFixture[str]
) -> None:
    exported.rewrite(lambda lines: without(lines, lambda line: line.get("origin") == B.name))
    code, problems, text = verify(exported, capsys)
    assert (code, problems) == (1, [("INCONSISTENT_EXPORT", B.name, 0)])
    assert "no origin line closes this origin's lines" in text


def test_inconsistent_export_and_truncated_tail_when_one_origins_records_were_stripped(
    exported: Exported, capsys: pytest.CaptureFixture[str]
) -> None:
    exported.rewrite(lambda lines: without(lines, lambda line: line["type"] == "entry" and line["origin"] == B.name))
    code, problems, text = verify(exported, capsys)
    assert (code, problems) == (1, [("TRUNCATED_TAIL", B.name, 0), ("INCONSISTENT_EXPORT", B.name, 0)])
    assert "the origin line counts 10 records, 4 checkpoints" in text and "the file holds 0 records" in text


def test_inconsistent_export_when_lines_belong_to_an_origin_the_header_does_not_name(
    exported: Exported, capsys: pytest.CaptureFixture[str]
) -> None:
    exported.rewrite(lambda lines: [{**lines[0], "origins": [A.name]}, *lines[1:]])
    code, problems, _ = verify(exported, capsys)
    assert (code, problems) == (1, [("INCONSISTENT_EXPORT", B.name, 0)])


def test_an_origin_with_an_empty_window_verifies_when_its_origin_line_counts_zero(
    exported: Exported, capsys: pytest.CaptureFixture[str]
) -> None:
    stats = exported.export(ExportWindow(time_from=exported.times(B.name)[0]))
    assert (stats.records, stats.unsigned) == (10, 0)
    closing = {line["origin"]: line["records"] for line in exported.lines() if line["type"] == "origin"}
    assert closing == {A.name: 0, B.name: 10}
    code, problems, text = verify(exported, capsys)
    assert (code, problems) == (0, [])
    assert f"origins: {B.name}\n" in text


def test_unsigned_records_when_the_last_checkpoint_is_removed_and_a_record_rewritten(
    exported: Exported, capsys: pytest.CaptureFixture[str]
) -> None:
    def forge(lines: list[Line]) -> list[Line]:
        kept = without(lines, lambda line: line["type"] == "checkpoint" and line["tree_size"] == 10)
        for line in kept:
            if line["type"] == "entry" and (line["origin"], line["seq"]) == (A.name, 9):
                body = canonical_bytes({**json.loads(line["body"]), "who": {"subject": "mallory"}})
                line.update(body=body.decode(), leaf_hash=hash_leaf(body).hex())
            if line["type"] == "origin":
                line["checkpoints"] = 3
        return kept

    exported.rewrite(forge)
    code, problems, text = verify(exported, capsys)
    assert (code, problems) == (1, [("UNSIGNED_RECORDS", A.name, 9), ("UNSIGNED_RECORDS", B.name, 9)])
    assert f"unsigned (after the newest checkpoint): {A.name} seq 9..9 (1 records)" in text


def test_export_leaves_out_records_no_checkpoint_signs_yet_when_the_log_has_an_unsigned_tail(
    exported: Exported, capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite3.connect(exported.db) as conn:
        conn.execute("DELETE FROM checkpoints WHERE tree_size = 10")
    stats = exported.export()
    assert (stats.records, stats.unsigned) == (18, 2)
    assert max(line["seq"] for line in exported.lines() if line["type"] == "entry") == 8
    assert verify(exported, capsys)[:2] == (0, [])


def test_summary_names_the_first_seq_when_the_export_starts_mid_log(
    exported: Exported, capsys: pytest.CaptureFixture[str]
) -> None:
    exported.export(ExportWindow(time_from=exported.times(A.name)[5]), origins=(A.name,))
    code, problems, text = verify(exported, capsys)
    assert (code, problems) == (0, [])
    assert f"starts: {A.name} at seq 5\n" in text


def test_verify_export_draws_a_progress_line_when_stderr_is_a_terminal(
    exported: Exported, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert main(["audit", "verify", "--export", str(exported.out), "--keys", str(exported.keys)]) == 0
    assert "verifying: 20/20 records (100%)" in capsys.readouterr().err


def test_export_refuses_a_record_whose_body_column_changed_type_when_sqlite_cast_it(exported: Exported) -> None:
    """An export cannot carry a column's type: copying the row would present it as intact."""
    with sqlite3.connect(exported.db) as conn:
        conn.execute("UPDATE records SET body = CAST(body AS TEXT) WHERE origin = ? AND seq = 3", (A.name,))
    with pytest.raises(StorageError, match=r"record 'gw.a/log'/3 has columns of another type"):
        exported.export()
