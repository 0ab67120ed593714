"""``bastion audit ...`` driven through ``bastion.cli.main.main`` against a SQLite log written by AuditLog."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.unit.cli.audit_logs import KEY, ORIGIN, READER, append_interactions
from tests.unit.cli.support import run_audit as run
from tests.unit.cli.support import sqlite_rows

from bastion.audit import reading
from bastion.audit.keys import (
    SigningKey,
    parse_key_ring,
    parse_signing_key,
    parse_vkey,
    render_signing_key,
    render_vkey,
)
from bastion.storage import open_store

OTHER_KEY = SigningKey(ORIGIN, bytes(range(1, 33)))
WAIT_S = 5.0


@dataclass
class Log:
    url: str
    path: Path
    keys: Path
    tmp: Path
    rec: tuple[str, ...]
    """The recording options every reading command needs (tests/unit/cli/test_audit_read_recording.py)."""

    def sql(self, statement: str, *params: object) -> list[tuple[Any, ...]]:
        return sqlite_rows(self.path, statement, *params)


@pytest.fixture
def log(tmp_path: Path) -> Log:
    path = tmp_path / "audit.db"
    url = f"sqlite:///{path}"
    asyncio.run(append_interactions(url, 5))  # 10 records; checkpoints at 1, 5, 9 (every 4) and 10 (on close)
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# test ring\n{render_vkey(KEY.public())}\n")
    reader_key = tmp_path / "reader.key"
    reader_key.write_text(render_signing_key(KEY))
    return Log(url, path, keys, tmp_path, ("--record-as", READER, "--record-key", str(reader_key)))



# -- keys -------------------------------------------------------------------------------------------------


def test_keygen_writes_private_key_0600_and_prints_its_vkey_when_out_is_new(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gw.key"
    code, printed, _ = run(capsys, "keygen", "--name", "gw.example/log", "--out", str(out))
    assert code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = parse_signing_key(out.read_text())
    assert key.name == "gw.example/log"
    assert parse_vkey(printed.strip()) == key.public()
    assert len(parse_key_ring(printed)) == 1


def test_keygen_refuses_with_exit_2_when_the_file_exists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gw.key"
    out.write_text("precious")
    code, _, err = run(capsys, "keygen", "--name", "gw", "--out", str(out))
    assert code == 2
    assert "never overwritten" in err
    assert out.read_text() == "precious"


def test_keygen_exit_2_when_name_is_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "keygen", "--name", "has space", "--out", str(tmp_path / "k"))
    assert code == 2
    assert "invalid key name" in err
    assert not (tmp_path / "k").exists()


def test_pubkey_prints_the_vkey_when_key_comes_from_file_or_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "k"
    path.write_text(render_signing_key(KEY) + "\n")
    monkeypatch.setenv("BASTION_TEST_KEY", render_signing_key(KEY))
    assert run(capsys, "pubkey", "--key", str(path))[1].strip() == render_vkey(KEY.public())
    assert run(capsys, "pubkey", "--key-env", "BASTION_TEST_KEY")[1].strip() == render_vkey(KEY.public())
    code, _, err = run(capsys, "pubkey", "--key-env", "BASTION_TEST_UNSET")
    assert code == 2
    assert "BASTION_TEST_UNSET" in err


# -- verify -----------------------------------------------------------------------------------------------


def test_verify_exit_0_with_summary_when_log_untouched(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify", "--store", log.url, "--keys", str(log.keys))
    assert code == 0
    assert out.splitlines()[0] == f"records: 10  checkpoints: 4  origins: {ORIGIN}"
    assert out.splitlines()[1] == "time: 2026-07-01T12:00:00.000Z .. 2026-07-01T12:00:12.000Z"  # one tick per record and checkpoint
    assert "result: OK" in out


def test_verify_json_lists_problem_kind_and_position_when_a_body_is_edited(
    log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    body = log.sql("SELECT body FROM records WHERE origin = ? AND seq = 3", ORIGIN)[0][0]
    log.sql("UPDATE records SET body = ? WHERE seq = 3", bytes(body).replace(b'"bob"', b'"eve"'))
    code, out, _ = run(capsys, "verify", "--store", log.url, "--keys", str(log.keys), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert report["summary"]["records"] == 10
    assert [(p["kind"], p["position"]) for p in report["problems"]] == [("MODIFIED_RECORD", 3)]


def test_verify_exit_2_when_key_ring_is_missing_or_empty(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "verify", "--store", log.url, "--keys", str(log.tmp / "nope.txt"))
    assert (code, "cannot read key ring" in err) == (2, True)
    empty = log.tmp / "empty.txt"
    empty.write_text("# nothing\n")
    code, _, err = run(capsys, "verify", "--store", log.url, "--keys", str(empty))
    assert (code, "holds no keys" in err) == (2, True)


def test_verify_exit_2_when_store_url_is_unusable_or_origin_unknown(
    log: Log, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BASTION_STORE", raising=False)
    code, _, err = run(capsys, "verify", "--keys", str(log.keys))
    assert (code, "no store given" in err) == (2, True)
    monkeypatch.setenv("BASTION_STORE", log.url)
    assert run(capsys, "verify", "--keys", str(log.keys))[0] == 0
    code, _, err = run(capsys, "verify", "--store", "mysql://x/y", "--keys", str(log.keys))
    assert (code, "unsupported store URL" in err) == (2, True)
    code, _, err = run(capsys, "verify", "--store", log.url, "--keys", str(log.keys), "--origin", "nobody/log")
    assert (code, "nothing is stored for origin 'nobody/log'" in err) == (2, True)


def test_verify_exit_1_with_truncated_tail_when_trusted_checkpoint_is_newer_than_the_store(
    log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    note = log.sql("SELECT note FROM checkpoints WHERE tree_size = 10")[0][0]
    trusted = log.tmp / "witnessed.note"
    trusted.write_text(str(note))
    assert run(capsys, "verify", "--store", log.url, "--keys", str(log.keys), "--trusted", str(trusted))[0] == 0
    log.sql("DELETE FROM checkpoints WHERE tree_size = 10")
    log.sql("DELETE FROM records WHERE seq >= 9")
    log.sql("DELETE FROM search_index WHERE seq >= 9")
    assert run(capsys, "verify", "--store", log.url, "--keys", str(log.keys))[0] == 0  # the tail was cut cleanly
    code, out, _ = run(capsys, "verify", "--store", log.url, "--keys", str(log.keys), "--trusted", str(trusted))
    assert code == 1
    assert f"TRUNCATED_TAIL origin={ORIGIN} position=9" in out


def test_verify_exit_2_when_trusted_file_is_not_a_checkpoint(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = log.tmp / "bogus.note"
    bogus.write_text("hello\n")
    code, _, err = run(capsys, "verify", "--store", log.url, "--keys", str(log.keys), "--trusted", str(bogus))
    assert (code, "not a signed checkpoint" in err) == (2, True)


def test_verify_escapes_control_characters_when_a_reason_carries_a_hostile_origin(
    log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    body = bytes(log.sql("SELECT body FROM records WHERE seq = 5")[0][0])
    log.sql("UPDATE records SET body = ? WHERE seq = 5", body.replace(f'"{ORIGIN}"'.encode(), b'"x\\nresult: OK"'))
    code, out, _ = run(capsys, "verify", "--store", log.url, "--keys", str(log.keys))
    assert code == 1
    assert f"INSERTED_RECORD origin={ORIGIN} position=5: record of origin 'x\\\\nresult: OK'" in out
    assert [line for line in out.splitlines() if line == "result: OK"] == []


def test_verify_draws_progress_on_stderr_when_stderr_is_a_terminal(
    log: Log, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, _, err = run(capsys, "verify", "--store", log.url, "--keys", str(log.keys))
    assert code == 0
    assert "\rverifying: 10/10 records (100%)" in err


def test_verify_prints_no_progress_when_stderr_is_not_a_terminal(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "verify", "--store", log.url, "--keys", str(log.keys))[2] == ""


# -- proof ------------------------------------------------------------------------------------------------


def test_proof_verifies_offline_when_untouched(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    proof_file = log.tmp / "proof.json"
    code, _, _ = run(
        capsys,
        "proof",
        "--store",
        log.url,
        *log.rec,
        "--origin",
        ORIGIN,
        "--seq",
        "6",
        "--keys",
        str(log.keys),
        "--out",
        str(proof_file),
    )
    assert code == 0
    doc = json.loads(proof_file.read_text())
    assert (doc["leaf_index"], doc["tree_size"], len(doc["proof"])) == (6, 10, 4)
    assert doc["checkpoint"].startswith(f"{ORIGIN}\n10\n")
    assert json.loads(doc["body"])["seq"] == 6
    code, out, _ = run(capsys, "verify-proof", str(proof_file), "--keys", str(log.keys))
    assert (code, out.splitlines()[0]) == (0, "result: OK")


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.update(proof=[d["proof"][0][:-2] + "00", *d["proof"][1:]]), "RootMismatchError"),
        (lambda d: d.update(leaf_index=d["leaf_index"] + 1), "RootMismatchError"),
        (lambda d: d.update(proof=d["proof"][:-1]), "MalformedProofError"),
        (lambda d: d.update(body=d["body"].replace('"q":3', '"q":4')), "does not hash to the proof's leaf hash"),
        (lambda d: d.update(tree_size=9), "the proof claims"),
        (lambda d: d.update(checkpoint=d["checkpoint"].replace("\n10\n", "\n11\n")), "BadSignatureError"),
    ],
    ids=["flip-proof0", "index-plus-1", "drop-last-hash", "edit-body", "claim-other-size", "edit-note"],
)
def test_verify_proof_exit_1_with_reason_when_proof_is_mutated(
    log: Log, capsys: pytest.CaptureFixture[str], mutate: object, reason: str
) -> None:
    code, out, _ = run(capsys, "proof", "--store", log.url, *log.rec, "--origin", ORIGIN, "--seq", "6")
    doc = json.loads(out)
    mutate(doc)  # type: ignore[operator]
    path = log.tmp / "proof.json"
    path.write_text(json.dumps(doc))
    code, out, _ = run(capsys, "verify-proof", str(path), "--keys", str(log.keys), "--json")
    assert code == 1
    result = json.loads(out)
    assert result["ok"] is False
    assert reason in result["reason"]


def test_verify_proof_exit_1_when_the_ring_does_not_hold_the_log_key(
    log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    proof = log.tmp / "proof.json"
    run(capsys, "proof", "--store", log.url, *log.rec, "--origin", ORIGIN, "--seq", "0", "--out", str(proof))
    other = log.tmp / "other.txt"
    other.write_text(render_vkey(OTHER_KEY.public()) + "\n")
    code, out, _ = run(capsys, "verify-proof", str(proof), "--keys", str(other))
    assert code == 1
    assert "UnknownKeyError" in out


def test_verify_proof_exit_2_when_the_file_is_not_a_proof(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    path = log.tmp / "junk.json"
    path.write_text("{not json")
    assert run(capsys, "verify-proof", str(path), "--keys", str(log.keys))[0] == 2
    path.write_text(json.dumps({"format": "something-else"}))
    assert run(capsys, "verify-proof", str(path), "--keys", str(log.keys))[0] == 2


def test_proof_exit_1_when_no_checkpoint_covers_the_seq(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "proof", "--store", log.url, *log.rec, "--origin", ORIGIN, "--seq", "10")
    assert code == 1
    assert "covers seq 10" in err


# -- export -----------------------------------------------------------------------------------------------


def test_export_verifies_offline_when_untouched(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    out = log.tmp / "export.jsonl"
    code, _, err = run(capsys, "export", "--store", log.url, *log.rec, "--out", str(out))
    assert code == 0
    assert "exported 10 records and 4 checkpoints" in err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["format"] == "bastion-audit-export/1"
    entry = next(line for line in lines if line["type"] == "entry")
    assert json.loads(entry["body"])["seq"] == 0
    code, text, _ = run(capsys, "verify", "--export", str(out), "--keys", str(log.keys))
    assert code == 0
    assert text.startswith(f"records: 10  checkpoints: 4  origins: {ORIGIN}\n")


def test_verify_export_exit_2_when_a_named_origin_is_not_in_the_export(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    out = log.tmp / "export.jsonl"
    assert run(capsys, "export", "--store", log.url, *log.rec, "--origin", ORIGIN, "--out", str(out))[0] == 0
    code, text, err = run(capsys, "verify", "--export", str(out), "--keys", str(log.keys), "--origin", "gw.typo/log")
    assert code == 2 and "result: OK" not in text
    assert "gw.typo/log" in err


def test_verify_export_exit_1_when_an_exported_body_is_edited(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    out = log.tmp / "export.jsonl"
    run(capsys, "export", "--store", log.url, *log.rec, "--origin", ORIGIN, "--out", str(out))
    out.write_text(out.read_text().replace('\\"q\\":4', '\\"q\\":40'))
    code, text, _ = run(capsys, "verify", "--export", str(out), "--keys", str(log.keys), "--json")
    assert code == 1
    assert [(p["kind"], p["position"]) for p in json.loads(text)["problems"]] == [("MODIFIED_RECORD", 8)]


def test_export_window_starts_mid_log_and_still_verifies_when_from_is_given(
    log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    times = [str(t) for (t,) in log.sql("SELECT time FROM records ORDER BY seq")]
    out = log.tmp / "window.jsonl"
    assert (
        run(capsys, "export", "--store", log.url, *log.rec, "--from", times[5], "--out", str(out))[0]
        == 0
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["seq"] for line in lines if line["type"] == "entry"] == list(range(5, 10))
    assert [line["tree_size"] for line in lines if line["type"] == "prefix"] == [5]
    assert run(capsys, "verify", "--export", str(out), "--keys", str(log.keys))[0] == 0
    forged = [line for line in lines if line["type"] != "prefix"] + [
        {**next(line for line in lines if line["type"] == "prefix"), "hashes": ["00" * 32] * 2}
    ]
    out.write_text("".join(json.dumps(line) + "\n" for line in forged))
    code, text, _ = run(capsys, "verify", "--export", str(out), "--keys", str(log.keys))
    assert code == 1
    assert "ROOT_MISMATCH" in text


def test_export_window_extends_to_the_next_checkpoint_when_to_cuts_between_checkpoints(
    log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    times = [str(t) for (t,) in log.sql("SELECT time FROM records ORDER BY seq")]
    out = log.tmp / "window.jsonl"
    code, _, _ = run(
        capsys, "export", "--store", log.url, *log.rec, "--origin", ORIGIN, "--to", times[3], "--out", str(out)
    )
    assert code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["seq"] for line in lines if line["type"] == "entry"] == [0, 1, 2, 3, 4]
    assert [line["tree_size"] for line in lines if line["type"] == "checkpoint"] == [1, 5]
    assert run(capsys, "verify", "--export", str(out), "--keys", str(log.keys))[0] == 0


def test_export_refuses_with_exit_2_when_out_exists_or_origins_unnamed(
    log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    out = log.tmp / "exists.jsonl"
    out.write_text("keep")
    assert run(capsys, "export", "--store", log.url, *log.rec, "--origin", ORIGIN, "--out", str(out))[0] == 2
    assert out.read_text() == "keep"
    # Without --origin every origin in the store is exported.
    code, _, err = run(capsys, "export", "--store", log.url, *log.rec, "--out", str(log.tmp / "new.jsonl"))
    assert code == 0
    assert ORIGIN in err


def test_export_appends_a_log_exported_record_before_writing_when_record_as_is_given(
    log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = log.tmp / "admin.key"
    key_file.write_text(render_signing_key(KEY))
    out = log.tmp / "export.jsonl"
    code, _, _ = run(
        capsys,
        "export",
        "--store",
        log.url,
        "--origin",
        ORIGIN,
        "--out",
        str(out),
        "--record-as",
        ORIGIN,
        "--subject",
        "auditor@example",
        "--key",
        str(key_file),
    )
    assert code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    last = [line for line in lines if line["type"] == "entry"][-1]
    body = json.loads(last["body"])
    assert (body["seq"], body["kind"], body["who"]["subject"]) == (10, "log_exported", "auditor@example")
    assert body["detail"]["origins"] == [ORIGIN]
    assert run(capsys, "verify", "--export", str(out), "--keys", str(log.keys))[0] == 0


def test_verify_export_exit_2_when_the_file_is_not_an_export(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    path = log.tmp / "x.jsonl"
    path.write_text('{"type": "entry"}\n')
    code, _, err = run(capsys, "verify", "--export", str(path), "--keys", str(log.keys))
    assert (code, "header" in err) == (2, True)


# -- search / show / tail ---------------------------------------------------------------------------------


def test_search_prints_a_table_filtered_by_subject_and_outcome(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "search", "--store", log.url, *log.rec, "--subject", "alice", "--outcome", "denied")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["TIME", "ORIGIN", "SEQ", "KIND", "OUTCOME", "SUBJECT", "METHOD", "NAME", "SESSION"]
    assert [line.split()[2:6] for line in lines[1:]] == [["5", "response", "denied", "alice"]]


def test_search_json_filters_by_tool_session_and_kind(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "search", "--store", log.url, *log.rec,
        "--tool", "fetch", "--session", "s-1", "--kind", "request", "--json",
    )
    assert code == 0
    found = [json.loads(line) for line in out.splitlines()]
    assert [f["seq"] for f in found] == [6, 2]
    assert {f["body"]["what"]["name"] for f in found} == {"fetch"}


def test_search_escapes_control_characters_when_a_subject_holds_a_newline(
    log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(append_interactions(log.url, 1, start=5, subject="eve\n2026-01-01  forged\u202e"))
    code, out, _ = run(capsys, "search", "--store", log.url, *log.rec, "--kind", "request", "--limit", "1")
    assert code == 0
    assert len(out.splitlines()) == 2
    assert "eve\\u000a2026-01-01  forged\\u202e" in out


def test_show_links_request_and_response_when_given_either_seq(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    for seq in ("4", "5"):
        code, out, _ = run(capsys, "show", "--store", log.url, *log.rec, "--origin", ORIGIN, "--seq", seq, "--json")
        assert code == 0
        shown = json.loads(out)
        assert [(r["seq"], r["kind"]) for r in shown] == [(4, "request"), (5, "response")]
        assert shown[1]["body"]["decision"] == {"action": "deny", "rule_id": "deny-every-third"}
    code, out, _ = run(capsys, "show", "--store", log.url, *log.rec, "--origin", ORIGIN, "--seq", "4")
    assert out.splitlines()[0].startswith(f"== request: {ORIGIN} seq 4 at ")
    assert any(line.startswith(f"== response: {ORIGIN} seq 5 at ") for line in out.splitlines())


def test_show_exit_1_when_the_record_is_absent(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "show", "--store", log.url, *log.rec, "--origin", ORIGIN, "--seq", "99")
    assert (code, "no record" in err) == (1, True)


def test_tail_prints_the_last_records_when_not_following(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tail", "--store", log.url, *log.rec, "--origin", ORIGIN, "--last", "3", "--json")
    assert code == 0
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [7, 8, 9]


@pytest.mark.anyio
async def test_follow_yields_new_records_when_they_are_appended(log: Log) -> None:
    store = await open_store(log.url)
    try:
        stream = reading.follow_entries(store, ORIGIN, 9, poll_s=0.01, follow=True)
        assert (await asyncio.wait_for(anext(stream), WAIT_S)).seq == 9
        pending = asyncio.ensure_future(anext(stream))
        await append_interactions(log.url, 1, start=5)
        assert (await asyncio.wait_for(pending, WAIT_S)).seq == 10
        await stream.aclose()
    finally:
        await store.aclose()


# -- prune ------------------------------------------------------------------------------------------------


def test_prune_keeps_the_log_verifiable_when_records_go_behind_a_retention_checkpoint(
    log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = log.tmp / "gw.key"
    key_file.write_text(render_signing_key(KEY))
    code, out, _ = run(
        capsys, "prune", "--store", log.url, "--origin", ORIGIN, "--before", "6", "--key", str(key_file), "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert (result["first_retained_seq"], result["records_deleted"]) == (6, 6)
    assert "\nbastion-retention 6 " in result["checkpoint"]
    assert log.sql("SELECT min(seq), count(*) FROM records") == [(6, 4)]
    code, out, _ = run(capsys, "verify", "--store", log.url, "--keys", str(log.keys))
    assert (code, out.splitlines()[0]) == (0, f"records: 4  checkpoints: 5  origins: {ORIGIN}")


def test_verify_reports_deletion_not_pruning_when_head_rows_are_deleted_without_retention_checkpoint(
    log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    log.sql("DELETE FROM records WHERE seq < 6")
    code, out, _ = run(capsys, "verify", "--store", log.url, "--keys", str(log.keys))
    assert code == 1
    assert f"DELETED_RECORD origin={ORIGIN} position=0" in out


@pytest.mark.parametrize(
    ("before", "key", "reason"),
    [
        ("11", KEY, "--before must be in 1..10"),
        ("0", KEY, "--before must be in 1..10"),
        ("4", OTHER_KEY, "not verifiable with this key"),
    ],
    ids=["beyond-checkpoint", "zero", "other-key"],
)
def test_prune_refuses_and_deletes_nothing_when_cut_or_key_is_wrong(
    log: Log, capsys: pytest.CaptureFixture[str], before: str, key: SigningKey, reason: str
) -> None:
    key_file = log.tmp / "k.key"
    key_file.write_text(render_signing_key(key))
    code, _, err = run(
        capsys, "prune", "--store", log.url, "--origin", ORIGIN, "--before", before, "--key", str(key_file)
    )
    assert code == 1
    assert reason in err
    assert log.sql("SELECT count(*) FROM records") == [(10,)]


def test_prune_refuses_when_stored_records_no_longer_rebuild_the_signed_root(
    log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    log.sql("UPDATE records SET leaf_hash = ? WHERE seq = 2", b"\x07" * 32)
    key_file = log.tmp / "gw.key"
    key_file.write_text(render_signing_key(KEY))
    code, _, err = run(capsys, "prune", "--store", log.url, "--origin", ORIGIN, "--before", "4", "--key", str(key_file))
    assert code == 1
    assert "does not hash to its leaf" in err
    assert log.sql("SELECT count(*) FROM records") == [(10,)]
    assert log.sql("SELECT count(*) FROM checkpoints") == [(4,)]


def test_key_files_are_private_when_written_by_keygen_even_with_a_loose_umask(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = os.umask(0)
    try:
        assert run(capsys, "keygen", "--name", "gw", "--out", str(tmp_path / "k"))[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
