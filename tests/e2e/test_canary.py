"""Canaries: raw secrets never reach the client, the database files, an export, a sink copy or the logs.

One gateway subprocess (debug logging, SQLite store, a JSON Lines sink) serves an echo upstream.
The client calls ``secrets()`` (every kind of fake PII and credential, tests/servers/echo_server.py)
and ``echo`` with a card number and AWS credentials in its arguments. Every place the data could
land is collected once (module fixture) and then searched for each canary, raw and in the compact
forms a normaliser might produce.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.e2e.gateway import PYTHON, ROOT, echo_upstream, signing_key_file
from tests.e2e.test_crash import CALL_TIMEOUT_S, GatewayProcess, McpSession, read_log
from tests.servers.echo_server import SECRETS

from bastion.audit.entry import LogEntry

pytestmark = pytest.mark.e2e

ORIGIN = "test-canary"
ECHOED = f"card {SECRETS['card']} key {SECRETS['aws_access_key_id']} secret {SECRETS['aws_secret_access_key']}"


def variants(value: str) -> set[bytes]:
    """The canary as stored raw, without separators, and with JSON's optional '\\/' escape."""
    forms = {value, value.replace(" ", ""), value.replace(" ", "").replace("-", ""), value.replace("/", "\\/")}
    return {f.encode() for f in forms if len(f) >= 8}


Haystacks = dict[str, bytes]


async def _scenario(workdir: Path) -> tuple[Haystacks, list[dict[str, Any]], list[LogEntry]]:
    sink_path = workdir / "sink.jsonl"
    gateway = GatewayProcess({
        "upstreams": {"echo": echo_upstream("echo")},
        "log_level": "debug",
        "audit": {"signing_key_file": signing_key_file(str(workdir), ORIGIN), "origin": ORIGIN,
                  "sinks": [{"type": "jsonl", "path": str(sink_path)}]},
    }, workdir)
    haystacks: Haystacks = {}
    replies: list[dict[str, Any]] = []
    db_files = [gateway.db_path.with_name(gateway.db_path.name + suffix) for suffix in ("", "-wal", "-shm")]
    try:
        await gateway.start()
        async with httpx.AsyncClient(timeout=CALL_TIMEOUT_S) as http:
            session = McpSession(http, f"{gateway.url}/servers/echo/mcp")
            await session.open()
            replies.append((await session.call_tool("secrets", {}))[1])
            replies.append((await session.call_tool("echo", {"text": ECHOED}))[1])
        # The replies were released, so their records are committed: read the files under the live gateway.
        for path in db_files:
            haystacks[f"{path.name} (running)"] = path.read_bytes() if path.exists() else b""
    finally:
        await gateway.stop()
        gateway.ensure_dead()
    for path in db_files:
        haystacks[f"{path.name} (stopped)"] = path.read_bytes() if path.exists() else b""
    export_path = workdir / "export.jsonl"
    exported = await asyncio.to_thread(
        subprocess.run,
        [PYTHON, "-m", "bastion", "audit", "export", "--config", str(gateway.config_path), "--origin", ORIGIN,
         "--out", str(export_path)], cwd=ROOT, capture_output=True, timeout=CALL_TIMEOUT_S, check=False)
    assert exported.returncode == 0, exported.stderr
    haystacks["export"] = export_path.read_bytes()
    # The export holds each body as a JSON string: search the decoded bodies too.
    haystacks["export (decoded bodies)"] = b"\n".join(
        json.loads(line).get("body", "").encode() for line in haystacks["export"].splitlines())
    haystacks["export command output"] = exported.stdout + exported.stderr
    haystacks["sink copy"] = sink_path.read_bytes()
    haystacks["gateway stderr"] = gateway.stderr_path.read_bytes()
    haystacks["client replies"] = b"\n".join(orjson.dumps(r) for r in replies)
    entries, _ = await read_log(gateway.store_url, ORIGIN)
    return haystacks, replies, entries


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Haystacks, list[dict[str, Any]], list[LogEntry]]]:
    yield asyncio.run(_scenario(tmp_path_factory.mktemp("canary")))


def leaks_of(name: str, haystacks: Haystacks) -> list[str]:
    return sorted({where for where, data in haystacks.items() for form in variants(SECRETS[name]) if form in data})


def test_client_sees_masked_values_when_upstream_and_arguments_carry_secrets(scenario: Any) -> None:
    _, replies, entries = scenario
    secrets_text = replies[0]["result"]["content"][0]["text"]
    echoed_text = replies[1]["result"]["content"][0]["text"]
    for label in ("[EMAIL]", "[CARD]", "[PHONE]", "[SSN]", "[IBAN]", "[IP]", "[AWS_KEY]", "[JWT]"):
        assert label in secrets_text
    assert echoed_text.startswith("card [CARD] key [AWS_KEY] secret ")
    assert all(reply["result"]["isError"] is False for reply in replies)
    # The audit rows exist and hold the masked forms (the wire reply is not the only evidence).
    bodies = [orjson.loads(e.body) for e in entries]
    echo_request = next(b for b in bodies if b["kind"] == "request" and b.get("what", {}).get("name") == "echo")
    assert echo_request["what"]["arguments"]["text"].startswith("card [CARD] key [AWS_KEY] secret ")
    responses = [b for b in bodies if b["kind"] == "response" and b.get("what", {}).get("method") == "tools/call"]
    assert [r["outcome"] for r in responses] == ["ok", "ok"]


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_canary_appears_nowhere_when_the_detector_covers_it(scenario: Any, name: str) -> None:
    haystacks, _, _ = scenario
    assert all(haystacks[k] for k in ("audit.db (stopped)", "export", "sink copy", "gateway stderr"))
    assert leaks_of(name, haystacks) == []
