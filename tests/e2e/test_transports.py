"""Transports on both sides of Bastion, on the wire: a Streamable HTTP upstream (the echo server),
the client-facing reply shapes (JSON vs SSE), routing of server messages to streams, session end
with DELETE, and resumption of a dropped SSE stream with ``Last-Event-ID``.

Raw httpx is used wherever the shape of the HTTP exchange is what is being asserted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
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

WAIT_S = 10.0
PROTOCOL = "2025-11-25"
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    with serve_upstream(ECHO_SERVER, "--name", "web") as upstream_url:
        with running_gateway({"store": "sqlite:///:memory:", "upstreams": {"web": {"url": upstream_url}}}) as url:
            yield f"{url}/servers/web/mcp"


async def _session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    init = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
    }  # fmt: skip
    reply = await http.post(url, headers=HEADERS, json=init)
    assert reply.status_code == 200
    headers = {**HEADERS, "mcp-session-id": reply.headers["mcp-session-id"], "mcp-protocol-version": PROTOCOL}
    done = await http.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert done.status_code == 202
    return headers


async def _events(response: httpx.Response) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
    """(event id, message) for each SSE event that carries data."""
    event_id: str | None = None
    async for line in response.aiter_lines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:") and line[5:].strip():
            yield event_id, json.loads(line[5:])
        elif line == "":
            event_id = None


def _call(request_id: int, name: str, arguments: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if token is not None:
        params["_meta"] = {"progressToken": token}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def test_list_call_and_progress_work_when_upstream_speaks_streamable_http(gateway: str) -> None:
    progress: list[tuple[float, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message))

    async with Client(gateway) as client:
        assert client.server_info is not None and client.server_info.name == "web"
        assert {"echo", "slow", "add_tool"} <= {t.name for t in (await client.list_tools()).tools}
        assert (await client.call_tool("echo", {"text": "over http"})).content[0].text == "over http"  # type: ignore[union-attr]
        with anyio.fail_after(WAIT_S):
            slow = await client.call_tool("slow", {"seconds": 0.1}, progress_callback=on_progress)
    assert slow.content[0].text == "slept 0.1"  # type: ignore[union-attr]
    assert progress == [(0.0, "sleeping"), (1.0, "awake")]


async def test_reply_is_plain_json_when_nothing_else_comes_first(gateway: str) -> None:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        headers = await _session(http, gateway)
        reply = await http.post(gateway, headers=headers, json=_call(2, "echo", {"text": "plain"}))
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["id"] == 2
    assert reply.json()["result"]["content"][0]["text"] == "plain"


async def test_related_notification_goes_to_the_request_stream_when_upstream_relates_it(gateway: str) -> None:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        headers = await _session(http, gateway)
        async with http.stream("GET", gateway, headers={**headers, "accept": "text/event-stream"}) as get:
            assert get.status_code == 200
            # An HTTP upstream sends progress on the call's own POST stream; Bastion keeps it
            # there, ahead of the reply, although a GET stream is open.
            async with http.stream("POST", gateway, headers=headers, json=_call(3, "slow", {"seconds": 0.05}, "p")) as post:
                assert post.status_code == 200
                assert post.headers["content-type"].startswith("text/event-stream")
                with anyio.fail_after(WAIT_S):
                    messages = [m async for _, m in _events(post)]
    assert [m.get("method") for m in messages] == ["notifications/progress", "notifications/progress", None]
    assert all(m["params"]["progressToken"] == "p" for m in messages[:2])
    assert messages[2]["id"] == 3 and messages[2]["result"]["content"][0]["text"] == "slept 0.05"


async def test_dropped_stream_resumes_with_the_rest_when_client_sends_last_event_id(gateway: str) -> None:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        headers = await _session(http, gateway)
        first: tuple[str | None, dict[str, Any]] | None = None
        async with http.stream("POST", gateway, headers=headers, json=_call(4, "slow", {"seconds": 1.0}, "resume")) as post:
            assert post.headers["content-type"].startswith("text/event-stream")
            with anyio.fail_after(WAIT_S):
                async for event in _events(post):
                    first = event
                    break  # drop the connection after the first event
        assert first is not None
        first_id, first_message = first
        assert first_id is not None
        assert first_message["params"] == {"progressToken": "resume", "progress": 0.0, "total": 1.0, "message": "sleeping"}

        resume = {**headers, "accept": "text/event-stream", "last-event-id": first_id}
        async with http.stream("GET", gateway, headers=resume) as get:
            assert get.status_code == 200
            with anyio.fail_after(WAIT_S):
                rest = [event async for event in _events(get)]  # the stream ends once the reply is sent
    ids = [event_id for event_id, _ in rest]
    messages = [message for _, message in rest]
    assert first_id not in ids  # nothing replayed twice
    assert messages[0]["params"]["progress"] == 1.0
    assert messages[-1]["id"] == 4
    assert messages[-1]["result"]["content"][0]["text"] == "slept 1.0"


async def test_session_is_gone_when_client_deletes_it(gateway: str) -> None:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        headers = await _session(http, gateway)
        deleted = await http.delete(gateway, headers=headers)
        assert deleted.status_code == 200
        after = await http.post(gateway, headers=headers, json=_call(5, "echo", {"text": "late"}))
    assert after.status_code == 404
    assert after.json()["error"]["code"] == codes.INVALID_REQUEST
