"""Protocol revisions at the client edge: SDK 2.x ``auto`` (probes ``server/discover``, falls back
to initialize) and ``legacy`` modes, and raw initialize at each handshake-era revision with the
``MCP-Protocol-Version`` header enforced afterwards.

The upstream is the echo server over Streamable HTTP, so every new client session is cheap (no
child process per session). No 1.x SDK client is installed here: ``mode="legacy"`` is the 2.x
SDK's byte-identical pre-2026 handshake, and the raw requests pin each revision's wire exactly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mcp.client.client import Client
from tests.e2e.gateway import ROOT, running_gateway

from bastion.jsonrpc import codes

sys.path.insert(0, str(ROOT / "tests" / "conformance"))
try:
    from harness import ECHO_SERVER, serve_upstream
finally:
    sys.path.remove(str(ROOT / "tests" / "conformance"))

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
LATEST = "2025-11-25"
HANDSHAKE_REVISIONS = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]
ENDPOINTS = pytest.mark.parametrize("path", ["/servers/rev/mcp", "/mcp"])


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    with serve_upstream(ECHO_SERVER, "--name", "rev") as upstream_url:
        with running_gateway({"store": "sqlite:///:memory:", "upstreams": {"rev": {"url": upstream_url}}}) as url:
            yield url


def _initialize(version: str, request_id: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0", "id": request_id, "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
    }  # fmt: skip


async def _session(http: httpx.AsyncClient, url: str, version: str) -> tuple[str, dict[str, Any]]:
    reply = await http.post(url, headers=HEADERS, json=_initialize(version))
    assert reply.status_code == 200
    session_id = reply.headers["mcp-session-id"]
    negotiated = reply.json()["result"]["protocolVersion"]
    done = await http.post(
        url, headers={**HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": negotiated},
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
    )  # fmt: skip
    assert done.status_code == 202
    return session_id, reply.json()


@ENDPOINTS
async def test_discover_probe_gets_method_not_found_when_client_speaks_2026(gateway: str, path: str) -> None:
    probe = {"jsonrpc": "2.0", "id": 7, "method": "server/discover", "params": {}}
    async with httpx.AsyncClient() as http:
        reply = await http.post(f"{gateway}{path}", headers={**HEADERS, "mcp-protocol-version": "2026-07-28"}, json=probe)
    assert reply.status_code == 200
    body = reply.json()
    assert body["id"] == 7
    assert body["error"]["code"] == codes.METHOD_NOT_FOUND
    assert "mcp-session-id" not in reply.headers  # a probe opens no session


@ENDPOINTS
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_sdk_client_negotiates_latest_handshake_revision_when_connecting(gateway: str, path: str, mode: str) -> None:
    async with Client(f"{gateway}{path}", mode=mode) as client:
        assert client.protocol_version == LATEST
        # auto mode fell back: the session was made by initialize, not adopted from discover.
        assert client.session.initialize_result is not None
        assert client.session.discover_result is None
        tools = {t.name for t in (await client.list_tools()).tools}
        assert ("echo" if path.startswith("/servers") else "rev__echo") in tools


@ENDPOINTS
@pytest.mark.parametrize("version", HANDSHAKE_REVISIONS)
async def test_requested_revision_is_negotiated_and_header_enforced_when_client_initializes(
    gateway: str, path: str, version: str
) -> None:
    url = f"{gateway}{path}"
    list_tools = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    async with httpx.AsyncClient(timeout=10.0) as http:
        session_id, init = await _session(http, url, version)
        assert init["result"]["protocolVersion"] == version
        session = {**HEADERS, "mcp-session-id": session_id}

        good = await http.post(url, headers={**session, "mcp-protocol-version": version}, json=list_tools)
        assert good.status_code == 200
        assert good.json()["id"] == 2 and good.json()["result"]["tools"]

        bad = await http.post(url, headers={**session, "mcp-protocol-version": "2099-01-01"}, json=list_tools)
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == codes.INVALID_REQUEST

        # No header at all: MCP 2025-06-18 says assume 2025-03-26, which is served.
        bare = await http.post(url, headers=session, json=list_tools)
        assert bare.status_code == 200
        assert bare.json()["result"]["tools"]


async def test_federated_endpoint_offers_latest_when_client_asks_for_an_unknown_revision(gateway: str) -> None:
    async with httpx.AsyncClient(timeout=10.0) as http:
        _, init = await _session(http, f"{gateway}/mcp", "2099-01-01")
    assert init["result"]["protocolVersion"] == LATEST
    assert init["result"]["serverInfo"]["name"] == "bastion"


@pytest.mark.parametrize(("version", "status"), [("2025-03-26", 200), ("2025-06-18", 400), ("2025-11-25", 400)])
async def test_batches_follow_the_revision_when_client_posts_an_array(gateway: str, version: str, status: int) -> None:
    url = f"{gateway}/servers/rev/mcp"
    batch = [
        {"jsonrpc": "2.0", "id": 10, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "b"}}},
    ]
    async with httpx.AsyncClient(timeout=10.0) as http:
        session_id, _ = await _session(http, url, version)
        reply = await http.post(url, headers={**HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": version}, json=batch)
    assert reply.status_code == status
    if status == 200:
        # Either one JSON array or an SSE stream of the replies (the gateway streams as soon as
        # one reply is ready before the other); both are valid answers to a batch.
        if reply.headers["content-type"] == "application/json":
            messages = reply.json()
        else:
            messages = [json.loads(line[5:]) for line in reply.text.splitlines() if line.startswith("data:")]
        answers = {m["id"]: m for m in messages}
        assert set(answers) == {10, 11}
        assert answers[11]["result"]["content"][0]["text"] == "b"
    else:
        assert reply.json()["error"]["code"] == codes.INVALID_REQUEST
