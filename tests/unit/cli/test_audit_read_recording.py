"""Every read of the log through the CLI is itself a record in the log, written before anything is released.

Drives ``bastion audit search|show|tail|proof|unseal|export`` through ``bastion.cli.main.main``
against a real SQLite store, and ``bastion.audit.access.append_access_record`` against SQLite and
PostgreSQL for readers racing on one origin.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.contract.backends import provision
from tests.unit.cli.support import run_audit as run
from tests.unit.cli.support import sqlite_rows

from bastion.audit import reading
from bastion.audit.access import append_access_record
from bastion.audit.keys import SigningKey, parse_key_ring, render_signing_key, render_vkey
from bastion.audit.log import AuditLog, CheckpointPolicy
from bastion.audit.record import AuditEvent, EventKind, Outcome
from bastion.audit.seal_keys import generate_seal_key, render_seal_private_key
from bastion.audit.sealing import SealedField, Sealer
from bastion.cli.audit_reader import current_os_user
from bastion.errors import StorageError
from bastion.storage import open_store
from bastion.storage.base import AppendBatch, AuditStore, LogHead

ORIGIN = "gw.test/log"
READER = f"{ORIGIN}/cli"
KEY = SigningKey(ORIGIN, bytes(range(32)))
OTHER_KEY = SigningKey("someone-else", bytes(range(1, 33)))
AUDITOR = generate_seal_key("alice")
SECRET = {"text": "card 4111 1111 1111 1111"}
SEALED_SEQ = 8
WAIT_S = 10.0
"""As in tests/contract/backends.py (not imported: this directory is not a package)."""


async def write_log(url: str) -> None:
    """Four request/response pairs (seq 0..7; the third is denied) and one sealed request (seq 8)."""
    store = await open_store(url)
    log = AuditLog(store, origin=ORIGIN, signing_key=KEY, checkpoints=CheckpointPolicy(4, 3600, 3600))
    await log.start()
    try:
        for i in range(4):
            call = {"subject": "alice", "method": "tools/call", "name": "search", "session_id": "s-0"}
            request = await log.append(AuditEvent(kind=EventKind.REQUEST, arguments={"q": i}, **call))
            outcome = Outcome.DENIED if i == 2 else Outcome.OK
            await log.append(AuditEvent(kind=EventKind.RESPONSE, outcome=outcome, request_seq=request.seq, **call))
        sealer = Sealer(ORIGIN, [AUDITOR.public()], SealedField)
        value = sealer.seal_value(SealedField.ARGUMENTS, SECRET, upstream="echo", method="tools/call", name="echo")
        assert value is not None
        sealed = await log.append(
            AuditEvent(kind=EventKind.REQUEST, upstream="echo", method="tools/call", name="echo",
                       arguments={"text": "[CARD]"}, arguments_sha256=value.sha256,
                       sealed={"arguments": value.envelope})
        )
        assert sealed.seq == SEALED_SEQ
    finally:
        await log.aclose()
        await store.aclose()


@dataclass
class Log:
    url: str
    path: Path
    tmp: Path
    ring: Path
    key_file: Path
    auditor_file: Path

    @property
    def rec(self) -> tuple[str, ...]:
        return ("--record-as", READER, "--record-key", str(self.key_file))

    def sql(self, statement: str, *params: object) -> list[tuple[Any, ...]]:
        return sqlite_rows(self.path, statement, *params)

    def reader_records(self, origin: str = READER) -> list[dict[str, Any]]:
        rows = self.sql("SELECT seq, body FROM records WHERE origin = ? ORDER BY seq", origin)
        assert [seq for seq, _ in rows] == list(range(len(rows)))
        return [json.loads(bytes(body)) for _, body in rows]

    def origins(self) -> list[str]:
        return [origin for (origin,) in self.sql("SELECT origin FROM log_heads ORDER BY origin")]


@pytest.fixture
def log(tmp_path: Path) -> Log:
    path = tmp_path / "audit.db"
    url = f"sqlite:///{path}"
    asyncio.run(write_log(url))
    ring = tmp_path / "keys.txt"
    ring.write_text(render_vkey(KEY.public()) + "\n")
    key_file = tmp_path / "gw.key"
    key_file.write_text(render_signing_key(KEY) + "\n")
    auditor_file = tmp_path / "alice.key"
    auditor_file.write_text(render_seal_private_key(AUDITOR) + "\n")
    return Log(url, path, tmp_path, ring, key_file, auditor_file)



@dataclass(frozen=True)
class Read:
    """One reading command: its arguments, what it must print, and the record it must leave."""

    argv: Callable[[Log], list[str]]
    printed: Callable[[str, Log], bool]
    kind: str
    detail: dict[str, Any]


READS = {
    "search": Read(
        lambda log: ["search", "--subject", "alice", "--outcome", "denied", "--json"],
        lambda out, _: [json.loads(line)["seq"] for line in out.splitlines()] == [5],
        "log_read",
        {"command": "search", "query": {"subject": "alice", "outcome": "denied", "limit": 100}},
    ),
    "show": Read(
        lambda log: ["show", "--origin", ORIGIN, "--seq", "4", "--json"],
        lambda out, _: [(r["seq"], r["kind"]) for r in json.loads(out)] == [(4, "request"), (5, "response")],
        "log_read",
        {"command": "show", "origin": ORIGIN, "seq": 4},
    ),
    "tail": Read(
        lambda log: ["tail", "--origin", ORIGIN, "--last", "3", "--json"],
        lambda out, _: [json.loads(line)["seq"] for line in out.splitlines()] == [6, 7, 8],
        "log_read",
        {"command": "tail", "origin": ORIGIN, "last": 3, "follow": False},
    ),
    "proof": Read(
        lambda log: ["proof", "--origin", ORIGIN, "--seq", "6"],
        lambda out, _: (json.loads(out)["leaf_index"], json.loads(out)["tree_size"]) == (6, 9),
        "log_read",
        {"command": "proof", "origin": ORIGIN, "seq": 6},
    ),
    "unseal": Read(
        lambda log: ["unseal", "--origin", ORIGIN, "--seq", str(SEALED_SEQ), "--key", str(log.auditor_file),
                     "--field", "arguments"],
        lambda out, _: json.loads(out) == SECRET,
        "log_read",
        {"command": "unseal", "origin": ORIGIN, "seq": SEALED_SEQ, "field": "arguments"},
    ),
    "export": Read(
        lambda log: ["export", "--origin", ORIGIN, "--out", str(log.tmp / "july.jsonl")],
        lambda _, log: [json.loads(line)["type"] for line in (log.tmp / "july.jsonl").read_text().splitlines()].count(
            "entry"
        )
        == 9,
        "log_exported",
        {"command": "export", "origins": [ORIGIN], "file": "july.jsonl"},
    ),
}
RELEASES_FILES = {"export": "july.jsonl"}


@pytest.mark.parametrize("command", sorted(READS))
def test_read_writes_one_signed_record_to_the_reader_origin_when_record_as_is_given(
    log: Log, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    read = READS[command]
    code, out, err = run(capsys, *read.argv(log), "--store", log.url, *log.rec)
    assert code == 0, err
    assert read.printed(out, log)
    (record,) = log.reader_records()
    assert (record["origin"], record["seq"], record["kind"]) == (READER, 0, read.kind)
    assert record["who"] == {"subject": current_os_user(), "auth_method": "os_user"}
    assert record["detail"] == read.detail
    assert SECRET["text"] not in json.dumps(record)  # unseal records which value was opened, never the value
    assert log.sql("SELECT max(tree_size) FROM checkpoints WHERE origin = ?", READER) == [(1,)]
    assert len(log.reader_records(ORIGIN)) == 9  # the gateway's origin is untouched


def test_search_of_the_reader_origin_finds_its_own_record_when_it_runs(
    log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    # The record is committed before the store is read, so the search sees the record of itself.
    code, out, _ = run(capsys, "search", "--origin", READER, "--json", "--store", log.url, *log.rec)
    assert code == 0
    (found,) = [json.loads(line) for line in out.splitlines()]
    assert (found["origin"], found["seq"], found["kind"]) == (READER, 0, "log_read")
    assert found["body"]["detail"]["query"] == {"origin": READER, "limit": 100}


def test_reader_origin_verifies_when_several_reads_were_recorded(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("search", "show", "export"):
        assert run(capsys, *READS[command].argv(log), "--store", log.url, *log.rec)[0] == 0
    code, out, _ = run(capsys, "verify", "--store", log.url, "--keys", str(log.ring), "--origin", READER)
    assert code == 0, out
    # Each read commits its record with a checkpoint, and its close signs the closing one.
    assert out.splitlines()[0] == f"records: 3  checkpoints: 6  origins: {READER}"
    code, out, _ = run(capsys, "verify", "--store", log.url, "--keys", str(log.ring), "--json")
    assert code == 0, out
    assert json.loads(out)["summary"]["origins"] == [ORIGIN, READER]
    assert [r["kind"] for r in log.reader_records()] == ["log_read", "log_read", "log_exported"]


@pytest.mark.parametrize("command", sorted(READS))
def test_read_refuses_with_exit_2_and_prints_nothing_when_no_recording_source_is_given(
    log: Log, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("BASTION_STORE", log.url)
    code, out, err = run(capsys, *READS[command].argv(log))
    assert (code, out) == (2, "")
    assert "reads of the audit log are recorded in the log" in err
    assert "--config FILE" in err and "--record-as ORIGIN" in err
    assert log.origins() == [ORIGIN]
    assert not (log.tmp / "july.jsonl").exists()


@pytest.mark.parametrize("command", sorted(READS))
def test_read_exits_2_and_releases_nothing_when_the_store_refuses_the_record(
    log: Log, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    log.sql(
        f"CREATE TRIGGER refuse_readers BEFORE INSERT ON records WHEN NEW.origin = '{READER}' "
        "BEGIN SELECT RAISE(ABORT, 'reader origin refused'); END"
    )
    argv = READS[command].argv(log)
    if command == "proof":
        argv += ["--out", str(log.tmp / "proof.json")]
    code, out, err = run(capsys, *argv, "--store", log.url, *log.rec)
    assert (code, out) == (2, "")
    assert "could not be recorded in the audit log, so nothing was released" in err
    assert "reader origin refused" in err
    assert SECRET["text"] not in err
    assert not (log.tmp / "july.jsonl").exists()
    assert not (log.tmp / "proof.json").exists()
    assert log.sql("SELECT count(*) FROM records WHERE origin = ?", READER) == [(0,)]


def test_config_supplies_store_reader_origin_and_key_when_given(
    log: Log, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BASTION_STORE", raising=False)
    config = log.tmp / "bastion.yaml"
    config.write_text(yaml.safe_dump({
        "store": log.url,
        "identity": {"allow_anonymous": True, "resource_url": "http://127.0.0.1:8080"},
        "policy": {"default": "allow"},
        "audit": {"origin": ORIGIN, "signing_key_env": "BASTION_TEST_AUDIT_KEY", "key_name": ORIGIN},
        "upstreams": {"echo": {"command": ["true"]}},
    }))
    monkeypatch.setenv("BASTION_TEST_AUDIT_KEY", render_signing_key(KEY))
    code, out, err = run(capsys, "search", "--kind", "request", "--json", "--config", str(config))
    assert code == 0, err
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [8, 6, 4, 2, 0]
    assert log.origins() == [ORIGIN, READER]
    (record,) = log.reader_records()
    assert record["detail"] == {"command": "search", "query": {"kind": "request", "limit": 100}}
    note = log.sql("SELECT note FROM checkpoints WHERE origin = ? ORDER BY id DESC LIMIT 1", READER)[0][0]
    assert note.startswith(f"{READER}\n1\n")
    assert run(capsys, "verify", "--store", log.url, "--keys", str(log.ring), "--origin", READER)[0] == 0
    # The configuration's key_name guard applies to the CLI as it does to the gateway.
    monkeypatch.setenv("BASTION_TEST_AUDIT_KEY", render_signing_key(OTHER_KEY))
    code, out, err = run(capsys, "search", "--config", str(config))
    assert (code, out) == (2, "")
    assert "audit.key_name expects" in err
    assert len(log.reader_records()) == 1


def test_claimed_subject_is_recorded_with_the_os_account_when_record_subject_is_given(
    log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["show", "--origin", ORIGIN, "--seq", "0", "--store", log.url, *log.rec, "--record-subject", "eve\nforged"]
    assert run(capsys, *argv)[0] == 0
    (record,) = log.reader_records()
    assert record["who"] == {"subject": "eve\nforged", "auth_method": "claimed"}
    assert record["detail"] == {"command": "show", "origin": ORIGIN, "seq": 0, "os_user": current_os_user()}


def test_tail_follow_is_recorded_once_at_the_start_when_following(
    log: Log, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    following = reading.follow_entries
    polls: list[bool] = []

    def one_pass(store: AuditStore, origin: str, start: int, poll_s: float, follow: bool, **options: Any) -> Any:
        polls.append(follow)
        return following(store, origin, start, poll_s, False, **options)  # stop after the stored records

    monkeypatch.setattr(reading, "follow_entries", one_pass)
    code, out, _ = run(capsys, "tail", "--origin", ORIGIN, "--last", "2", "-f", "--json", "--store", log.url, *log.rec)
    assert (code, polls) == (0, [True])
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [7, 8]
    (record,) = log.reader_records()
    assert record["detail"] == {"command": "tail", "origin": ORIGIN, "last": 2, "follow": True}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--record-as", READER), "--record-as needs --record-key FILE or --record-key-env VAR"),
        (("--record-as", "two words", "--record-key", "k"), "an origin is one word"),
        (("--config", "cfg.yaml", "--record-key", "k"), "go with --record-as"),
    ],
    ids=["record-as-without-key", "origin-with-space", "config-with-key"],
)
def test_read_refuses_with_exit_2_when_recording_options_do_not_fit(
    log: Log, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...], message: str
) -> None:
    code, out, err = run(capsys, "tail", "--origin", ORIGIN, "--store", log.url, *extra)
    assert (code, out) == (2, "")
    assert message in err
    assert log.origins() == [ORIGIN]


def test_verify_records_nothing_when_it_reads_the_store(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    before = log.sql("SELECT count(*) FROM records"), log.sql("SELECT count(*) FROM checkpoints")
    assert run(capsys, "verify", "--store", log.url, "--keys", str(log.ring))[0] == 0
    assert (log.sql("SELECT count(*) FROM records"), log.sql("SELECT count(*) FROM checkpoints")) == before
    assert log.origins() == [ORIGIN]


# -- readers racing for one origin ------------------------------------------------------------------------


class RacingStore:
    """Delegates to a real store; the first ``racers`` head reads wait for each other, so every racer
    starts from the same head and all but one must lose the store's compare-and-swap."""

    def __init__(self, store: AuditStore, racers: int) -> None:
        self._store = store
        self._barrier = asyncio.Barrier(racers)
        self._held = racers
        self.conflicts = 0

    async def fetch_head(self, origin: str) -> LogHead | None:
        head = await self._store.fetch_head(origin)
        if self._held:
            self._held -= 1
            await self._barrier.wait()
        return head

    async def append_batch(self, batch: AppendBatch) -> None:
        try:
            await self._store.append_batch(batch)
        except StorageError:
            self.conflicts += 1  # SQLite names the tree-size conflict; PostgreSQL may hit the primary key first
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_concurrent_recordings_land_with_contiguous_seqs_when_readers_race(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with provision(backend, tmp_path) as url:
        store = await open_store(url)
        try:
            racing = RacingStore(store, racers=3)
            receipts = await asyncio.wait_for(
                asyncio.gather(*(
                    append_access_record(racing, origin=READER, signing_key=KEY,  # type: ignore[arg-type]
                                         kind=EventKind.LOG_READ, subject=f"reader-{i}", auth_method="os_user",
                                         detail={"n": i})
                    for i in range(3)
                )),
                WAIT_S,
            )
            assert sorted(r.seq for r in receipts) == [0, 1, 2]
            assert racing.conflicts >= 2  # two racers lost the first round
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # a lost race is no error to report
            entries = await store.fetch_entries(READER, 0, 10)
            bodies = [json.loads(e.body) for e in entries]
            assert [b["seq"] for b in bodies] == [0, 1, 2]
            assert sorted(b["who"]["subject"] for b in bodies) == ["reader-0", "reader-1", "reader-2"]
            latest = await store.fetch_latest_checkpoint(READER)
            assert latest is not None and latest.tree_size == 3
            ring = parse_key_ring(render_vkey(KEY.public()))
            report = await reading.verify_store(store, [READER], ring)
            assert (report.ok, report.problems) == (True, [])
        finally:
            await store.aclose()


@pytest.mark.anyio
async def test_access_record_raises_storage_error_when_the_store_keeps_refusing(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        racing = RacingStore(store, racers=1)
        racing.append_batch = _refuse  # type: ignore[method-assign]
        refused = r"cannot record the log_read in origin .* after 3 attempts: disk on fire"
        with pytest.raises(StorageError, match=refused):
            await append_access_record(racing, origin=READER, signing_key=KEY,  # type: ignore[arg-type]
                                       kind=EventKind.LOG_READ, subject="x", detail={}, attempts=3, backoff_s=0.001)
        assert await store.fetch_head(READER) is None
    finally:
        await store.aclose()


async def _refuse(batch: AppendBatch) -> None:
    raise StorageError("disk on fire")


class LosesOnceAfterTheFirstReader:
    """The second reader's first batch waits until the first reader is done, then loses its race."""

    def __init__(self, store: AuditStore) -> None:
        self._store = store
        self.first_done = asyncio.Event()
        self.lost = False

    async def append_batch(self, batch: AppendBatch) -> None:
        if not self.lost and any(b'"second"' in entry.body for entry in batch.entries):
            await self.first_done.wait()
            self.lost = True
            raise StorageError("log head moved (injected)")
        await self._store.append_batch(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.anyio
async def test_a_reader_that_finishes_first_does_not_unmute_another_readers_lost_race(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    writer_log = logging.getLogger(AuditLog.__module__)
    level = writer_log.level
    store = await open_store(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        gated = LosesOnceAfterTheFirstReader(store)

        async def reader(subject: str) -> int | None:
            receipt = await append_access_record(gated, origin=READER, signing_key=KEY,  # type: ignore[arg-type]
                                                 kind=EventKind.LOG_READ, subject=subject, detail={})
            if subject == "first":
                gated.first_done.set()
            return receipt.seq

        seqs = await asyncio.wait_for(asyncio.gather(reader("first"), reader("second")), WAIT_S)
        assert (seqs, gated.lost) == ([0, 1], True)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # the retried loss stays quiet
        assert writer_log.level == level  # and the writer's real failures are not muted from now on
    finally:
        await store.aclose()
