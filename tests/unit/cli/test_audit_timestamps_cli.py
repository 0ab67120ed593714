"""``bastion audit verify --tsa-certs`` and ``export``: RFC 3161 tokens checked from a store and from an export.

The log is written through ``AuditLog`` into a real SQLite file while a ``CheckpointTimestamper``
gets its checkpoints stamped by OpenSSL's reference responder (``openssl ts -reply``,
tests/servers/openssl_tsa.py), because no public TSA is reachable from the test environment.
Tampering edits the database or the export file directly, as an attacker would.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.servers.openssl_tsa import make_tsa_pki, running_tsa
from tests.unit.cli.support import run_audit as run
from tests.unit.cli.support import sqlite_rows

from bastion.audit.keys import SigningKey, render_signing_key, render_vkey
from bastion.audit.log import AuditLog, CheckpointPolicy
from bastion.audit.record import AuditEvent, EventKind
from bastion.audit.timestamping import CheckpointTimestamper, TsaClient
from bastion.storage import open_store

ORIGIN = "gw.test/log"
KEY = SigningKey(ORIGIN, bytes(range(32)))
EVERY_4 = CheckpointPolicy(every_records=4, every_s=3600, heartbeat_s=3600)
STAMPED_SIZES = [4, 8, 12]
WAIT_S = 10.0


async def write_stamped_log(url: str, tsa_url: str) -> None:
    """Twelve records with a checkpoint every four; wait for each checkpoint's token before going on."""
    store = await open_store(url)
    log = AuditLog(store, origin=ORIGIN, signing_key=KEY, checkpoints=EVERY_4)
    await log.start()
    async with httpx.AsyncClient() as http:
        stamper = CheckpointTimestamper(store, store.checkpoint_timestamps, ORIGIN, [TsaClient(http, tsa_url)], poll_s=0.02)
        await stamper.start()
        try:
            for size in STAMPED_SIZES:
                for i in range(4):
                    await log.append(AuditEvent(kind=EventKind.REQUEST, method="tools/call", name="t", arguments={"i": i}))
                async with asyncio.timeout(WAIT_S):
                    while size not in [t.tree_size for t in await store.checkpoint_timestamps.fetch_timestamps(ORIGIN)]:
                        await asyncio.sleep(0.02)
        finally:
            await log.aclose()
            await stamper.aclose()
            await store.aclose()


@dataclass
class StampedLog:
    url: str
    path: Path
    keys: Path
    tsa_certs: Path
    tmp: Path
    rec: tuple[str, ...]

    def sql(self, statement: str, *params: object) -> list[tuple[Any, ...]]:
        return sqlite_rows(self.path, statement, *params)


@pytest.fixture
def stamped(tmp_path: Path) -> StampedLog:
    path = tmp_path / "audit.db"
    with running_tsa(tmp_path / "pki") as tsa:
        asyncio.run(write_stamped_log(f"sqlite:///{path}", tsa.url))
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{render_vkey(KEY.public())}\n")
    reader_key = tmp_path / "reader.key"
    reader_key.write_text(render_signing_key(KEY))
    rec = ("--record-as", f"{ORIGIN}/cli", "--record-key", str(reader_key))
    return StampedLog(f"sqlite:///{path}", path, keys, tsa.pki.root_cert, tmp_path, rec)



def problems(text: str) -> list[tuple[str, int]]:
    return [(p["kind"], p["position"]) for p in json.loads(text)["problems"]]


def flip_last_byte(token: bytes) -> bytes:
    return token[:-1] + bytes([token[-1] ^ 0x01])  # the last byte is inside the CMS signature


def test_verify_reports_every_stamped_checkpoint_when_tsa_certs_are_given(
    stamped: StampedLog, capsys: pytest.CaptureFixture[str]
) -> None:
    assert [s for (s,) in stamped.sql("SELECT tree_size FROM checkpoint_timestamps ORDER BY tree_size")] == STAMPED_SIZES
    latest = max(str(t) for (t,) in stamped.sql("SELECT gen_time FROM checkpoint_timestamps"))
    code, text, _ = run(capsys, "verify", "--store", stamped.url, "--keys", str(stamped.keys),
                        "--tsa-certs", str(stamped.tsa_certs))
    assert code == 0, text
    assert f"timestamps: 3 checkpoints carry a verified RFC 3161 token, latest TSA time {latest}\nresult: OK\n" in text
    code, text, _ = run(capsys, "verify", "--store", stamped.url, "--keys", str(stamped.keys))
    assert (code, "timestamps:" in text) == (0, False)


def test_verify_exit_1_with_bad_timestamp_when_a_stored_token_is_altered(
    stamped: StampedLog, capsys: pytest.CaptureFixture[str]
) -> None:
    [(token,)] = stamped.sql("SELECT token FROM checkpoint_timestamps WHERE tree_size = 8")
    stamped.sql("UPDATE checkpoint_timestamps SET token = ? WHERE tree_size = 8", flip_last_byte(bytes(token)))
    code, text, _ = run(capsys, "verify", "--store", stamped.url, "--keys", str(stamped.keys),
                        "--tsa-certs", str(stamped.tsa_certs), "--json")
    assert (code, problems(text)) == (1, [("BAD_TIMESTAMP", 8)])
    assert json.loads(text)["summary"]["timestamped_checkpoints"] == 2


def test_verify_exit_1_with_timestamp_mismatch_when_a_token_is_filed_under_another_checkpoint(
    stamped: StampedLog, capsys: pytest.CaptureFixture[str]
) -> None:
    stamped.sql("DELETE FROM checkpoint_timestamps WHERE tree_size = 4")
    stamped.sql("UPDATE checkpoint_timestamps SET tree_size = 4 WHERE tree_size = 8")
    code, text, _ = run(capsys, "verify", "--store", stamped.url, "--keys", str(stamped.keys),
                        "--tsa-certs", str(stamped.tsa_certs), "--json")
    assert (code, problems(text)) == (1, [("TIMESTAMP_MISMATCH", 4)])


def test_verify_exit_1_with_bad_timestamps_when_the_tsa_is_not_among_the_trusted_certs(
    stamped: StampedLog, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = make_tsa_pki(stamped.tmp / "other", "Other TSA").root_cert
    code, text, _ = run(capsys, "verify", "--store", stamped.url, "--keys", str(stamped.keys),
                        "--tsa-certs", str(stranger), "--json")
    assert (code, problems(text)) == (1, [("BAD_TIMESTAMP", size) for size in STAMPED_SIZES])


def test_verify_exit_2_when_tsa_certs_are_unreadable_or_not_certificates(
    stamped: StampedLog, capsys: pytest.CaptureFixture[str]
) -> None:
    (stamped.tmp / "junk.pem").write_text("junk\n")
    for certs in (stamped.tmp / "missing.pem", stamped.tmp / "junk.pem"):
        code, _, err = run(capsys, "verify", "--store", stamped.url, "--keys", str(stamped.keys), "--tsa-certs", str(certs))
        assert (code, "TSA certificates" in err) == (2, True)


def test_export_carries_the_tokens_and_verifies_them_offline(stamped: StampedLog, capsys: pytest.CaptureFixture[str]) -> None:
    out = stamped.tmp / "export.jsonl"
    code, _, err = run(capsys, "export", "--store", stamped.url, *stamped.rec, "--origin", ORIGIN, "--out", str(out))
    assert code == 0
    assert "(3 RFC 3161 time-stamp tokens)" in err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    stored = {int(s): bytes(t) for s, t in stamped.sql("SELECT tree_size, token FROM checkpoint_timestamps")}
    exported = {line["tree_size"]: base64.b64decode(line["token"]) for line in lines if line["type"] == "timestamp"}
    assert exported == stored
    code, text, _ = run(capsys, "verify", "--export", str(out), "--keys", str(stamped.keys),
                        "--tsa-certs", str(stamped.tsa_certs))
    assert code == 0, text
    assert "timestamps: 3 checkpoints carry a verified RFC 3161 token" in text
    forged = [
        {**line, "token": base64.b64encode(flip_last_byte(base64.b64decode(line["token"]))).decode()}
        if line["type"] == "timestamp" and line["tree_size"] == 12 else line
        for line in lines
    ]
    out.write_text("".join(json.dumps(line) + "\n" for line in forged))
    code, text, _ = run(capsys, "verify", "--export", str(out), "--keys", str(stamped.keys),
                        "--tsa-certs", str(stamped.tsa_certs), "--json")
    assert (code, problems(text)) == (1, [("BAD_TIMESTAMP", 12)])


def test_verify_export_exit_2_when_a_timestamp_line_is_malformed(
    stamped: StampedLog, capsys: pytest.CaptureFixture[str]
) -> None:
    out = stamped.tmp / "export.jsonl"
    assert run(capsys, "export", "--store", stamped.url, *stamped.rec, "--origin", ORIGIN, "--out", str(out))[0] == 0
    out.write_text(out.read_text().replace('"token":"', '"token":"!'))
    code, _, err = run(capsys, "verify", "--export", str(out), "--keys", str(stamped.keys))
    assert (code, "base64" in err) == (2, True)
