"""The federated endpoint ``/mcp``: two echo upstreams that both offer ``echo``, one client.

Names follow proxy/naming.py (``<upstream>__<tool>``); a ``notifications/tools/list_changed``
from either upstream reaches the federated client, seen once through the SDK's message handler
and once on a raw SSE GET stream (where the routing rules say an unrelated message goes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError
from tests.e2e.gateway import echo_upstream, running_gateway

from bastion.jsonrpc import codes

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

WAIT_S = 10.0
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
PROTOCOL = "2025-11-25"


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    config = {"store": "sqlite:///:memory:", "upstreams": {"alpha": echo_upstream("alpha"), "beta": echo_upstream("beta")}}
    with running_gateway(config) as url:
        yield url


async def test_both_echo_tools_are_callable_when_upstreams_share_the_name(gateway: str) -> None:
    async with Client(f"{gateway}/mcp") as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert names.count("alpha__echo") == 1 and names.count("beta__echo") == 1
        assert "echo" not in names
        for upstream in ("alpha", "beta"):
            result = await client.call_tool(f"{upstream}__echo", {"text": f"to {upstream}"})
            assert result.is_error is False
            assert result.content[0].text == f"to {upstream}"  # type: ignore[union-attr]
            who = await client.call_tool(f"{upstream}__whoami", {})
            assert who.content[0].text == upstream  # type: ignore[union-attr]


async def test_bare_tool_name_is_invalid_params_when_called_on_federated_endpoint(gateway: str) -> None:
    async with Client(f"{gateway}/mcp") as client:
        with pytest.raises(MCPError) as info:
            await client.call_tool("echo", {"text": "which one?"})
    assert info.value.error.code == codes.INVALID_PARAMS


@pytest.mark.parametrize("upstream", ["alpha", "beta"])
async def test_list_changed_reaches_federated_client_when_either_upstream_adds_a_tool(gateway: str, upstream: str) -> None:
    changed = anyio.Event()
    count = 0

    async def on_message(message: Any) -> None:
        nonlocal count
        if isinstance(message, types.ToolListChangedNotification):
            count += 1
            changed.set()

    tool = f"added-{upstream}"
    async with Client(f"{gateway}/mcp", message_handler=on_message) as client:
        added = await client.call_tool(f"{upstream}__add_tool", {"name": tool})
        assert added.content[0].text == f"added {tool}"  # type: ignore[union-attr]
        with anyio.fail_after(WAIT_S):
            await changed.wait()
        names = {t.name for t in (await client.list_tools()).tools}
        assert f"{upstream}__{tool}" in names
        assert (await client.call_tool(f"{upstream}__{tool}", {"text": "new"})).content[0].text == "new"  # type: ignore[union-attr]

        changed = anyio.Event()
        await client.call_tool(f"{upstream}__remove_tool", {"name": tool})
        with anyio.fail_after(WAIT_S):
            await changed.wait()
        assert f"{upstream}__{tool}" not in {t.name for t in (await client.list_tools()).tools}
    assert count >= 2


async def _open_session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    init = {
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
    }  # fmt: skip
    reply = await http.post(url, headers=HEADERS, json=init)
    assert reply.status_code == 200
    assert reply.json()["result"]["protocolVersion"] == PROTOCOL
    headers = {**HEADERS, "mcp-session-id": reply.headers["mcp-session-id"], "mcp-protocol-version": PROTOCOL}
    done = await http.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert done.status_code == 202
    return headers


async def test_list_changed_arrives_on_get_stream_when_unrelated_to_any_request(gateway: str) -> None:
    url = f"{gateway}/mcp"
    async with httpx.AsyncClient(timeout=httpx.Timeout(WAIT_S)) as http:
        headers = await _open_session(http, url)
        async with http.stream("GET", url, headers={**headers, "accept": "text/event-stream"}) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "beta__add_tool", "arguments": {"name": "on-get"}}}
            reply = await http.post(url, headers=headers, json=call)
            # A stdio upstream cannot relate its notification to the call, so the POST gets
            # only its reply (as plain JSON) and the notification goes to the GET stream.
            assert reply.status_code == 200
            assert reply.headers["content-type"] == "application/json"
            assert reply.json()["result"]["content"][0]["text"] == "added on-get"
            with anyio.fail_after(WAIT_S):
                async for line in stream.aiter_lines():
                    if line.startswith("data:"):
                        message = json.loads(line[5:])
                        break
    assert message == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
