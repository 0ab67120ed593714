"""The records a real gateway writes: every answer has one, each fits the published schema, and
the embedded SQLite store fails closed as PostgreSQL does.

A SQLite trigger that aborts every insert into ``records`` stands in for a store that cannot
write (disk full, read-only file); it is dropped again to bring the store back.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest

from bastion.jsonrpc import codes
from tests.e2e.gateway import MCP_HEADERS, ROOT, echo_upstream, open_raw_session, running_gateway

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "audit-record.schema.json").read_text())


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bastion-records-") as name:
        yield Path(name)


@pytest.fixture
def gateway(workdir: Path) -> Iterator[str]:
    with running_gateway({"upstreams": {"alpha": echo_upstream("alpha")}}, workdir=str(workdir)) as base:
        yield base


def records(workdir: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(workdir / "audit.db") as conn:
        return [orjson.loads(body) for (body,) in conn.execute("SELECT body FROM records ORDER BY seq")]


def set_store_broken(workdir: Path, broken: bool) -> None:
    with sqlite3.connect(workdir / "audit.db") as conn:
        if broken:
            conn.execute("CREATE TRIGGER refuse_records BEFORE INSERT ON records BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        else:
            conn.execute("DROP TRIGGER refuse_records")


def call(request_id: int, name: str, arguments: dict[str, Any], **meta: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def test_a_cancelled_call_its_progress_and_a_reused_id_are_all_recorded(gateway: str, workdir: Path) -> None:
    url = f"{gateway}/servers/alpha/mcp"
    async with httpx.AsyncClient(timeout=10) as http:
        headers = await open_raw_session(http, url)
        async with http.stream("POST", url, json=call(9, "slow", {"seconds": 3}, progressToken="p"), headers=headers) as first:
            lines = first.aiter_lines()
            async for line in lines:
                if "notifications/progress" in line:
                    break
            reused = await http.post(url, json=call(9, "echo", {"text": "again"}), headers=headers)
            assert reused.json()["error"]["code"] == codes.INVALID_REQUEST
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9, "reason": "t"}}
            assert (await http.post(url, json=cancel, headers=headers)).status_code == 202
            _ = [line async for line in lines]
        probe = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {}}
        assert (await http.post(url, json=probe, headers=MCP_HEADERS)).json()["error"]["code"] == codes.METHOD_NOT_FOUND

    log = records(workdir)
    slow = [r for r in log if r.get("what", {}).get("name") == "slow"]
    assert [(r["kind"], r.get("outcome")) for r in slow] == [("request", None), ("response", "cancelled")]
    assert slow[1]["correlation"]["request_seq"] == slow[0]["seq"]
    progress = [r for r in log if r.get("what", {}).get("method") == "notifications/progress"]
    assert progress and progress[0]["what"]["arguments"]["message"] == "sleeping"
    refused = [r for r in log if r.get("result", {}).get("error", {}).get("message") == "Invalid Request: id already in use"]
    assert refused and refused[0]["what"]["name"] == "echo"
    assert any(r.get("what", {}).get("method") == "server/discover" for r in log)
    for record in log:
        jsonschema.validate(record, SCHEMA)


async def test_on_sqlite_a_store_that_cannot_write_refuses_calls_and_keeps_sessions_open(gateway: str, workdir: Path) -> None:
    url = f"{gateway}/servers/alpha/mcp"
    async with httpx.AsyncClient(timeout=10) as http:
        headers = await open_raw_session(http, url)
        set_store_broken(workdir, True)
        refused = await http.post(url, json=call(1, "add_tool", {"name": "side_effect"}), headers=headers)
        assert refused.json()["error"]["code"] == codes.AUDIT_UNAVAILABLE
        closing = await http.delete(url, headers=headers)
        assert closing.status_code == 503  # the close cannot be recorded, so the session stays
        set_store_broken(workdir, False)

        listed = await http.post(url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=headers)
        assert "side_effect" not in {t["name"] for t in listed.json()["result"]["tools"]}  # never performed
        assert (await http.delete(url, headers=headers)).status_code == 200

    log = records(workdir)
    assert [r["kind"] for r in log].count("session_closed") == 1
    assert not any(r.get("what", {}).get("name") == "add_tool" for r in log)


async def test_an_upstream_error_without_a_message_fails_that_call_alone(workdir: Path) -> None:
    description = workdir / "description.txt"
    description.write_text("Runs a read-only SQL query.")
    shifty = {"command": [sys.executable, str(ROOT / "tests" / "servers" / "shifty_server.py")],
              "env": {"SHIFTY_DESCRIPTION_FILE": str(description)}}
    with running_gateway({"upstreams": {"db": shifty}}, workdir=str(workdir)) as base:
        url = f"{base}/servers/db/mcp"
        async with httpx.AsyncClient(timeout=10) as http:
            headers = await open_raw_session(http, url)
            bad = await http.post(url, json=call(1, "query", {"sql": "bare error"}), headers=headers)
            assert bad.json()["error"]["code"] == codes.UPSTREAM_UNAVAILABLE  # "answered with garbage": not relayed as it came
            good = await http.post(url, json=call(2, "query", {"sql": "select 1"}), headers=headers)
            assert good.json()["result"]["content"][0]["text"] == "1 row"  # the upstream link lives on
    for record in records(workdir):
        jsonschema.validate(record, SCHEMA)


async def test_a_client_reply_nobody_waits_for_is_recorded_masked_or_refused(gateway: str, workdir: Path) -> None:
    url = f"{gateway}/servers/alpha/mcp"
    stray = {"jsonrpc": "2.0", "id": 4242, "result": {"content": [{"type": "text", "text": "mail bob@example.com"}]}}
    async with httpx.AsyncClient(timeout=10) as http:
        headers = await open_raw_session(http, url)
        assert (await http.post(url, json=stray, headers=headers)).status_code == 202
        set_store_broken(workdir, True)
        refused = await http.post(url, json={**stray, "id": 4243}, headers=headers)
        set_store_broken(workdir, False)
        unrecordable = await http.post(url, json={**stray, "id": 2**60}, headers=headers)  # beyond RFC 8785's integers
        assert unrecordable.status_code == 400
        assert unrecordable.json()["error"]["code"] == codes.INVALID_REQUEST
        listed = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers)
        assert listed.status_code == 200  # the session serves on
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == codes.AUDIT_UNAVAILABLE

    [record] = [r for r in records(workdir) if r.get("correlation", {}).get("jsonrpc_id") == 4242]
    assert record["kind"] == "response"
    assert record["detail"] == {"direction": "to_client", "reason": "no request of the gateway waits for this reply"}
    assert "bob@example.com" not in json.dumps(record) and "mail " in json.dumps(record["result"])
    assert record["who"]["source_address"] == "127.0.0.1"
    jsonschema.validate(record, SCHEMA)
