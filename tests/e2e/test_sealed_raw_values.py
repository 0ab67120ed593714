"""Sealed raw values through a real gateway: masked for operators, recoverable only by auditors.

Two auditor key pairs come from ``bastion audit sealkey``; a real Bastion (uvicorn, SQLite) with
``audit.seal_raw`` naming both public keys serves the echo upstream. The client sends canaries in
the arguments and gets them echoed back. Then: the records' readable fields hold the masked form,
the database files never hold a canary in plain bytes, ``bastion audit unseal`` with either
auditor key prints the raw JSON, a stranger's key gets exit 1, and an envelope moved onto another
record refuses to open (and ``verify`` reports the edit).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.e2e.gateway import PYTHON, ROOT, echo_upstream, running_gateway, signing_key_file
from tests.e2e.test_identity import RawSession
from tests.servers.echo_server import SECRETS

from bastion.audit.keys import parse_signing_key, render_vkey
from bastion.audit.seal_keys import parse_seal_private_key, parse_seal_public_key

pytestmark = pytest.mark.e2e

ORIGIN = "test-sealed"
WAIT_S = 20.0
CANARIES = {name: SECRETS[name] for name in ("card", "aws_access_key_id", "aws_secret_access_key", "email")}
FIRST = {"text": " ".join(f"{name}={value}" for name, value in CANARIES.items())}
SECOND = {"text": f"second call, card {SECRETS['card']}"}


def variants(value: str) -> set[bytes]:
    """The canary as stored raw, without separators, and with JSON's optional '\\/' escape."""
    forms = {value, value.replace(" ", ""), value.replace(" ", "").replace("-", ""), value.replace("/", "\\/")}
    return {f.encode() for f in forms if len(f) >= 8}


def bastion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "bastion", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=WAIT_S, check=False)


@dataclass
class Scenario:
    workdir: Path
    db_path: Path
    keys: dict[str, Path]
    """Private key file per auditor (alice, bob) plus a stranger whose key was never configured."""
    replies: list[dict[str, Any]]
    bodies: list[dict[str, Any]]
    db_bytes: dict[str, bytes]

    def record(self, kind: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The request (or its response) record of the echo call made with ``arguments`` (one session)."""
        jsonrpc_id = 1 + [FIRST, SECOND].index(arguments)  # RawSession numbers its calls from 1
        found = [b for b in self.bodies if b["kind"] == kind and b.get("what", {}).get("method") == "tools/call"
                 and b.get("correlation", {}).get("jsonrpc_id") == jsonrpc_id]
        assert len(found) == 1, found
        return found[0]

    def unseal(self, seq: int, key: str, db_path: Path | None = None) -> subprocess.CompletedProcess[str]:
        # The read is recorded to ORIGIN/cli, signed with the gateway's key (written by signing_key_file).
        return bastion("audit", "unseal", "--store", f"sqlite:///{db_path or self.db_path}", "--origin", ORIGIN,
                       "--seq", str(seq), "--key", str(self.keys.get(key, self.workdir / key)),
                       "--record-as", f"{ORIGIN}/cli", "--record-key", str(self.workdir / f"{ORIGIN}.key"))


async def _calls(url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        session = RawSession(http, f"{url}/servers/echo/mcp", {})
        assert (await session.initialize()).status_code == 200
        replies = []
        for arguments in (FIRST, SECOND):
            response, reply = await session.call_tool("echo", arguments)
            assert response.status_code == 200 and reply is not None
            replies.append(reply)
        return replies


def _scenario(workdir: Path) -> Scenario:
    keys: dict[str, Path] = {}
    for name in ("alice", "bob", "stranger"):
        made = bastion("audit", "sealkey", "--out", str(workdir / name))
        assert made.returncode == 0, made.stderr
        assert parse_seal_public_key(made.stdout) == parse_seal_public_key((workdir / f"{name}.pub").read_text())
        keys[name] = workdir / f"{name}.key"
    config = {
        "upstreams": {"echo": echo_upstream("echo")},
        "audit": {"signing_key_file": signing_key_file(str(workdir), ORIGIN), "origin": ORIGIN,
                  "seal_raw": {"recipients": [str(workdir / "alice.pub"), str(workdir / "bob.pub")]}},
    }
    db_path = workdir / "audit.db"
    db_files = [db_path.with_name(db_path.name + suffix) for suffix in ("", "-wal", "-shm")]
    db_bytes: dict[str, bytes] = {}
    with running_gateway(config, str(workdir)) as url:
        replies = asyncio.run(_calls(url))
        # The replies were released, so their records are committed: read the files under the live gateway.
        db_bytes.update({f"{p.name} (running)": p.read_bytes() for p in db_files if p.exists()})
    db_bytes.update({f"{p.name} (stopped)": p.read_bytes() for p in db_files if p.exists()})
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT body FROM records WHERE origin = ? ORDER BY seq", (ORIGIN,)).fetchall()
    return Scenario(workdir, db_path, keys, replies, [orjson.loads(row[0]) for row in rows], db_bytes)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    yield _scenario(tmp_path_factory.mktemp("sealed"))


def test_sealkey_writes_a_private_file_only_the_owner_reads_when_generating(scenario: Scenario) -> None:
    private = scenario.keys["alice"]
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    key = parse_seal_private_key(private.read_text())
    assert key.name == "alice"
    assert parse_seal_public_key((scenario.workdir / "alice.pub").read_text()) == key.public()
    again = bastion("audit", "sealkey", "--out", str(scenario.workdir / "alice"))
    assert again.returncode == 2 and "never overwritten" in again.stderr
    assert parse_seal_private_key(private.read_text()) == key  # untouched


def test_readable_fields_hold_masked_values_when_raw_values_are_sealed(scenario: Scenario) -> None:
    assert all(r["result"]["isError"] is False for r in scenario.replies)
    assert "[CARD]" in scenario.replies[0]["result"]["content"][0]["text"]
    request, response = scenario.record("request", FIRST), scenario.record("response", FIRST)
    assert "[CARD]" in request["what"]["arguments"]["text"]
    assert "[CARD]" in json.dumps(response["result"]["released"])
    assert response["outcome"] == "ok"
    for body, field in ((request, "arguments"), (response, "result")):
        assert list(body["sealed"]) == [field]
        assert [r["key_name"] for r in body["sealed"][field]["recipients"]] == ["alice", "bob"]
    assert request["what"]["arguments_sha256"] and response["result"]["upstream_sha256"]


@pytest.mark.parametrize("name", sorted(CANARIES))
def test_canary_is_absent_from_database_bytes_when_sealed(scenario: Scenario, name: str) -> None:
    assert scenario.db_bytes["audit.db (stopped)"]
    found = sorted({where for where, data in scenario.db_bytes.items() for form in variants(CANARIES[name])
                    if form in data})
    assert found == []


@pytest.mark.parametrize("auditor", ["alice", "bob"])
def test_auditor_recovers_raw_values_when_unsealing_with_the_cli(scenario: Scenario, auditor: str) -> None:
    request, response = scenario.record("request", FIRST), scenario.record("response", FIRST)
    opened = scenario.unseal(request["seq"], auditor)
    assert opened.returncode == 0, opened.stderr
    assert json.loads(opened.stdout) == FIRST
    opened = scenario.unseal(response["seq"], auditor)
    assert opened.returncode == 0, opened.stderr
    assert json.loads(opened.stdout)["content"][0]["text"] == FIRST["text"]


def test_unseal_refuses_when_the_key_is_not_a_recipient_or_unreadable(scenario: Scenario) -> None:
    seq = scenario.record("request", FIRST)["seq"]
    stranger = scenario.unseal(seq, "stranger")
    assert stranger.returncode == 1
    assert "not sealed for key stranger" in stranger.stderr and SECRETS["card"] not in stranger.stdout
    missing = scenario.unseal(seq, "absent.key")
    assert missing.returncode == 2 and "cannot read key file" in missing.stderr
    started = next(b["seq"] for b in scenario.bodies if b["kind"] == "gateway_started")
    plain = scenario.unseal(started, "alice")
    assert plain.returncode == 1 and "holds no sealed value" in plain.stderr


def test_unseal_fails_when_a_sealed_blob_is_moved_to_another_record(scenario: Scenario) -> None:
    tampered = scenario.workdir / "tampered.db"
    shutil.copy(scenario.db_path, tampered)
    source, target = scenario.record("request", FIRST), scenario.record("request", SECOND)
    assert scenario.unseal(target["seq"], "alice", tampered).returncode == 0  # untouched: opens
    with sqlite3.connect(tampered) as conn:
        (raw,) = conn.execute("SELECT body FROM records WHERE origin = ? AND seq = ?", (ORIGIN, target["seq"])).fetchone()
        body = orjson.loads(raw)
        body["sealed"] = source["sealed"]
        conn.execute("UPDATE records SET body = ? WHERE origin = ? AND seq = ?",
                     (orjson.dumps(body, option=orjson.OPT_SORT_KEYS), ORIGIN, target["seq"]))
    moved = scenario.unseal(target["seq"], "alice", tampered)
    assert moved.returncode == 1
    assert "does not belong to this record" in moved.stderr and SECRETS["aws_access_key_id"] not in moved.stdout
    key = parse_signing_key((scenario.workdir / f"{ORIGIN}.key").read_text())  # written by signing_key_file
    ring = scenario.workdir / "ring.txt"
    ring.write_text(render_vkey(key.public()) + "\n")
    verified = bastion("audit", "verify", "--store", f"sqlite:///{tampered}", "--origin", ORIGIN, "--keys", str(ring),
                       "--json")
    assert verified.returncode == 1, verified.stdout
    assert "MODIFIED_RECORD" in verified.stdout
