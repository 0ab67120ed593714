"""``bastion audit search|show|tail|proof|export`` against SQLite and PostgreSQL logs written by AuditLog.

What a reader types is checked before anything is read or recorded (argparse, exit 2): times are
RFC 3339 with an offset and compared as instants (since/from inclusive, until/to exclusive, to
the millisecond); seqs and counts are whole numbers a record can carry; a search returns
1..10,000 records and says how to continue. A store URL that names no store is bad input (exit
2), never a new empty store; a record or log that is not there is a failed command (exit 1).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.contract.backends import PG_DSN, POSTGRES, drop_schema, new_schema_name
from tests.unit.cli.audit_logs import KEY, ORIGIN, READER, append_interactions
from tests.unit.cli.support import run_audit as run

from bastion.audit.keys import render_signing_key, render_vkey
from bastion.cli.main import main
from bastion.storage import open_store


@dataclass
class Stored:
    url: str
    tmp: Path
    keys: Path
    rec: tuple[str, ...]
    """``--store`` and the recording options every reading command needs."""

    def reader_head(self) -> int:
        """How many records the reader origin holds: one per read that was recorded."""

        async def size() -> int:
            store = await open_store(self.url)
            try:
                head = await store.fetch_head(READER)
                return head.tree_size if head else 0
            finally:
                await store.aclose()

        return asyncio.run(size())


@pytest.fixture(params=["sqlite", POSTGRES])
def stored(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stored]:
    """Ten records of ORIGIN at 12:00:00, :02, :03, :04, :05, :07, :08, :09, :10, :12 (seq 0..9), checkpoints at 1, 5, 9, 10."""
    schema = new_schema_name("cli") if request.param != "sqlite" else None
    url = f"{PG_DSN}?schema={schema}" if schema else f"sqlite:///{tmp_path / 'audit.db'}"
    try:
        asyncio.run(append_interactions(url, 5))
        keys = tmp_path / "keys.txt"
        keys.write_text(f"{render_vkey(KEY.public())}\n")
        reader_key = tmp_path / "reader.key"
        reader_key.write_text(render_signing_key(KEY))
        yield Stored(url, tmp_path, keys, ("--store", url, "--record-as", READER, "--record-key", str(reader_key)))
    finally:
        if schema:
            asyncio.run(drop_schema(schema))


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run ``bastion audit ARGV``, which argparse must refuse (exit 2); return what it printed on stderr."""
    with pytest.raises(SystemExit) as exited:
        main(["audit", *argv])
    assert exited.value.code == 2
    return capsys.readouterr().err


def seqs(out: str) -> list[int]:
    return [json.loads(line)["seq"] for line in out.splitlines()]


# -- times ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2026-07-01T12:00:05Z", "2026-07-01T12:00:09Z"),
        ("2026-07-01T14:00:05+02:00", "2026-07-01T14:00:09+02:00"),
        ("2026-07-01T12:00:04.0001Z", "2026-07-01T12:00:08.0001Z"),
    ],
    ids=["whole-seconds", "offset", "finer-than-a-millisecond"],
)
def test_search_since_is_inclusive_and_until_exclusive_at_the_instant_given(
    stored: Stored, capsys: pytest.CaptureFixture[str], since: str, until: str
) -> None:
    code, out, _ = run(capsys, "search", *stored.rec, "--origin", ORIGIN, "--since", since, "--until", until, "--json")
    assert (code, seqs(out)) == (0, [6, 5, 4])  # 12:00:08, :07 and :05; :09 is the end


@pytest.mark.parametrize("bad", ["yesterday", "garbage", "2026-07-01T12:00:00", "2026-02-30T00:00:00Z"])
def test_search_refuses_a_time_that_is_not_rfc_3339_with_an_offset_before_recording_anything(
    stored: Stored, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    for option in ("--since", "--until"):
        err = refused(capsys, "search", *stored.rec, option, bad)
        assert f"argument {option}: '{bad}'" in err
    assert stored.reader_head() == 0


def exported_seqs(stored: Stored, capsys: pytest.CaptureFixture[str], *window: str) -> list[int]:
    out = stored.tmp / f"export-{len(list(stored.tmp.iterdir()))}.jsonl"
    assert run(capsys, "export", *stored.rec, "--origin", ORIGIN, *window, "--out", str(out))[0] == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    return [line["seq"] for line in lines if line["type"] == "entry"]


def test_export_from_is_inclusive_and_to_exclusive_at_the_instant_given(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exported_seqs(stored, capsys, "--from", "2026-07-01T14:00:05+02:00") == [4, 5, 6, 7, 8, 9]
    # Seq 1 (12:00:02) is outside; the window then runs on to the checkpoint at 1, which signs seq 0 only.
    assert exported_seqs(stored, capsys, "--to", "2026-07-01T12:00:02Z") == [0]


def test_export_refuses_a_malformed_time_and_creates_no_file(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    out = stored.tmp / "never.jsonl"
    assert "not an RFC 3339 date-time" in refused(capsys, "export", *stored.rec, "--from", "yesterday", "--out", str(out))
    assert "has no UTC offset" in refused(capsys, "export", *stored.rec, "--to", "2026-07-01", "--out", str(out))
    assert not out.exists()
    assert stored.reader_head() == 0


# -- limits and pages -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["0", "-5", "10001", "ten"])
def test_search_refuses_a_limit_outside_1_to_10000(stored: Stored, capsys: pytest.CaptureFixture[str], limit: str) -> None:
    err = refused(capsys, "search", *stored.rec, "--limit", limit)
    assert "is not a whole number in 1..10000; page through more with --page-after" in err


def test_search_pages_through_every_match_with_the_cursor_it_prints(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    pages: list[list[int]] = []
    cursor: tuple[str, ...] = ()
    while True:
        code, out, err = run(capsys, "search", *stored.rec, "--origin", ORIGIN, "--limit", "4", "--json", *cursor)
        assert code == 0
        pages.append(seqs(out))
        found = re.search(r"Next page: --page-after (\S+)$", err.strip())
        if found is None:
            break
        cursor = ("--page-after", found.group(1))
    assert pages == [[9, 8, 7, 6], [5, 4, 3, 2], [1, 0]]
    assert "Next page" not in err


def test_search_refuses_a_cursor_it_did_not_print(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    assert "not a cursor printed by an earlier search" in refused(capsys, "search", *stored.rec, "--page-after", "nope")


# -- show, tail, proof -------------------------------------------------------------------------------------


def test_show_prints_the_interaction_when_given_its_response(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", *stored.rec, "--origin", ORIGIN, "--seq", "5", "--json")
    assert code == 0
    assert [(r["seq"], r["kind"]) for r in json.loads(out)] == [(4, "request"), (5, "response")]


@pytest.mark.parametrize("command", ["show", "proof"])
@pytest.mark.parametrize("seq", ["99999999999999999999", "9007199254740992", "-1", "1.5"])
def test_a_seq_no_record_can_carry_is_refused_before_recording_anything(
    stored: Stored, capsys: pytest.CaptureFixture[str], command: str, seq: str
) -> None:
    assert "is not a whole number in 0..9007199254740991" in refused(capsys, command, *stored.rec, "--origin", ORIGIN, "--seq", seq)
    assert stored.reader_head() == 0


def test_tail_prints_the_last_records(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tail", *stored.rec, "--origin", ORIGIN, "--last", "3", "--json")
    assert (code, seqs(out)) == (0, [7, 8, 9])
    code, out, _ = run(capsys, "tail", *stored.rec, "--origin", ORIGIN, "--last", "0", "--json")
    assert (code, out) == (0, "")


@pytest.mark.parametrize(("option", "value"), [("--last", "-3"), ("--poll-s", "0"), ("--poll-s", "nan")])
def test_tail_refuses_a_negative_count_or_a_pause_that_is_not_positive(
    stored: Stored, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    assert f"argument {option}: '{value}'" in refused(capsys, "tail", *stored.rec, "--origin", ORIGIN, option, value)


def test_tail_and_show_exit_1_alike_for_an_origin_the_store_does_not_hold(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "tail", *stored.rec, "--origin", "nobody/log")
    assert (code, out) == (1, "")
    assert "no log of origin 'nobody/log'" in err
    code, out, err = run(capsys, "show", *stored.rec, "--origin", "nobody/log", "--seq", "0")
    assert (code, out) == (1, "")
    assert "no record 'nobody/log'/0" in err


def test_proof_of_a_retained_record_verifies_after_a_prune(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = stored.tmp / "gw.key"
    key_file.write_text(render_signing_key(KEY))
    assert run(capsys, "prune", "--store", stored.url, "--origin", ORIGIN, "--before", "6", "--key", str(key_file))[0] == 0
    proof = stored.tmp / "proof.json"
    for seq in ("6", "9"):
        code, _, err = run(capsys, "proof", *stored.rec, "--origin", ORIGIN, "--seq", seq, "--keys", str(stored.keys),
                           "--out", str(proof))
        assert (code, err) == (0, "")
        code, out, _ = run(capsys, "verify-proof", str(proof), "--keys", str(stored.keys))
        assert (code, out.splitlines()[0]) == (0, "result: OK")
    code, _, err = run(capsys, "proof", *stored.rec, "--origin", ORIGIN, "--seq", "5")
    assert (code, "is not stored (pruned?)" in err) == (1, True)


# -- which store -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [("search",), ("tail", "--origin", ORIGIN), ("show", "--origin", ORIGIN, "--seq", "0")])
def test_a_store_url_that_names_no_store_is_bad_input_and_creates_nothing(
    stored: Stored, capsys: pytest.CaptureFixture[str], command: tuple[str, ...]
) -> None:
    if stored.url.startswith("sqlite:"):
        typo, message = stored.tmp / "audti.db", "no SQLite database at"
        url = f"sqlite:///{typo}"
    else:
        schema = new_schema_name("typo")
        url, message = f"{PG_DSN}?schema={schema}", f"schema '{schema}' does not exist"
    rec = ("--store", url, *stored.rec[2:])
    code, out, err = run(capsys, *command, *rec)
    assert (code, out) == (2, "")
    assert message in err
    if stored.url.startswith("sqlite:"):
        assert not typo.exists()


def test_export_from_a_store_url_that_names_no_store_is_bad_input_and_leaves_no_file(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    out = stored.tmp / "export.jsonl"
    if stored.url.startswith("sqlite:"):
        url, message = f"sqlite:///{stored.tmp / 'audti.db'}", "no SQLite database at"
    else:
        schema = new_schema_name("typo")
        url, message = f"{PG_DSN}?schema={schema}", f"schema '{schema}' does not exist"
    code, _, err = run(capsys, "export", "--store", url, *stored.rec[2:], "--out", str(out))
    assert (code, message in err) == (2, True)
    assert not out.exists()
