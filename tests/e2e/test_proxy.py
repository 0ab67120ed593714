"""The data path with the official SDK client: per-server transparency, federation, faults."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError
from tests.e2e.gateway import echo_upstream, open_raw_session, running_gateway

from bastion.jsonrpc import codes

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    config = {
        "upstreams": {
            "alpha": echo_upstream("alpha", timeout_s=2.0),
            "beta": echo_upstream("beta"),
        },
    }
    with running_gateway(config) as url:
        yield url


async def test_per_server_endpoint_is_transparent_when_client_connects(gateway: str) -> None:
    async with Client(f"{gateway}/servers/alpha/mcp") as client:
        assert client.server_info is not None and client.server_info.name == "alpha"
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"echo", "slow", "whoami"} <= tools
        result = await client.call_tool("echo", {"text": "héllo"})
        assert result.is_error is False
        assert result.content[0].text == "héllo"  # type: ignore[union-attr]


async def test_federated_names_do_not_collide_when_two_upstreams_share_a_tool(gateway: str) -> None:
    async with Client(f"{gateway}/mcp") as client:
        assert client.server_info is not None and client.server_info.name == "bastion"
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"alpha__echo", "beta__echo", "alpha__whoami", "beta__whoami"} <= names
        alpha = await client.call_tool("alpha__whoami", {})
        beta = await client.call_tool("beta__whoami", {})
        assert alpha.content[0].text == "alpha"  # type: ignore[union-attr]
        assert beta.content[0].text == "beta"  # type: ignore[union-attr]


async def test_unknown_federated_tool_gets_invalid_params_when_called(gateway: str) -> None:
    async with Client(f"{gateway}/mcp") as client:
        with pytest.raises(MCPError) as info:
            await client.call_tool("nosuch__echo", {})
        assert info.value.error.code == codes.INVALID_PARAMS


async def test_hung_upstream_gets_timeout_error_when_call_exceeds_timeout(gateway: str) -> None:
    async with Client(f"{gateway}/servers/alpha/mcp") as client:
        with pytest.raises(MCPError) as info:
            await client.call_tool("slow", {"seconds": 10})
        assert info.value.error.code == codes.UPSTREAM_TIMEOUT
        # The session keeps working after the timeout.
        assert (await client.call_tool("echo", {"text": "still here"})).content[0].text == "still here"  # type: ignore[union-attr]


async def test_crashed_upstream_gets_unavailable_and_restarts_when_called_again(gateway: str) -> None:
    async with Client(f"{gateway}/servers/beta/mcp") as client:
        with pytest.raises(MCPError) as info:
            await client.call_tool("crash", {})
        assert info.value.error.code == codes.UPSTREAM_UNAVAILABLE
        result = await client.call_tool("echo", {"text": "after restart"})
        assert result.content[0].text == "after restart"  # type: ignore[union-attr]


async def test_garbage_on_stdout_fails_the_call_when_upstream_breaks_framing(gateway: str) -> None:
    async with Client(f"{gateway}/servers/beta/mcp") as client:
        with pytest.raises(MCPError) as info:
            await client.call_tool("garbage", {"then": "exit"})
        assert info.value.error.code == codes.UPSTREAM_UNAVAILABLE
        assert (await client.call_tool("echo", {"text": "ok"})).content[0].text == "ok"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", {}, 400, codes.PARSE_ERROR),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "x"}', {}, 400, codes.INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}', {}, 400, codes.INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}', {"mcp-session-id": "nope"}, 404, codes.INVALID_REQUEST),
        (b"{}", {"content-type": "text/plain"}, 415, codes.INVALID_REQUEST),
        (b"{}", {"accept": "application/json"}, 406, codes.INVALID_REQUEST),
        (b"{}", {"host": "evil.example"}, 421, codes.INVALID_REQUEST),
        (b"{}", {"origin": "http://evil.example"}, 403, codes.INVALID_REQUEST),
    ],
)
async def test_bad_http_input_gets_precise_error_when_posted(
    gateway: str, body: bytes, headers: dict[str, str], status: int, code: int
) -> None:
    base = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{gateway}/mcp", content=body, headers={**base, **headers})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_oversized_body_gets_413_when_posted(gateway: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{gateway}/mcp",
            content=b"[" + b" " * (5 * 1024 * 1024) + b"]",
            headers={"content-type": "application/json", "accept": "application/json, text/event-stream"},
        )
    assert response.status_code == 413


async def test_reused_request_id_is_refused_when_the_first_is_still_in_flight(gateway: str) -> None:
    url = f"{gateway}/servers/alpha/mcp"
    async with httpx.AsyncClient(timeout=10) as http:
        headers = await open_raw_session(http, url)
        slow = {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                "params": {"name": "slow", "arguments": {"seconds": 1}, "_meta": {"progressToken": "p"}}}
        async with http.stream("POST", url, json=slow, headers=headers) as first:
            lines = first.aiter_lines()
            async for line in lines:  # the first progress event proves the call is in flight
                if "notifications/progress" in line:
                    break
            reused = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "y"}}}
            again = await http.post(url, json=reused, headers=headers)
            assert again.json()["error"]["code"] == codes.INVALID_REQUEST
            rest = [line async for line in lines]
        assert any("slept 1" in line for line in rest)


async def test_post_ends_without_a_reply_when_its_only_request_is_cancelled(gateway: str) -> None:
    url = f"{gateway}/servers/alpha/mcp"
    async with httpx.AsyncClient(timeout=10) as http:
        headers = await open_raw_session(http, url)
        slow = {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                "params": {"name": "slow", "arguments": {"seconds": 1.5}, "_meta": {"progressToken": "c"}}}
        async with http.stream("POST", url, json=slow, headers=headers) as first:
            lines = first.aiter_lines()
            async for line in lines:  # in flight once its first progress event arrives
                if "notifications/progress" in line:
                    break
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9, "reason": "t"}}
            assert (await http.post(url, json=cancel, headers=headers)).status_code == 202
            rest = [line async for line in lines]  # the stream ends, with no reply for id 9
        assert not any('"id":9' in line and ("result" in line or "error" in line) for line in rest)


async def test_new_tool_is_callable_without_relisting_when_upstream_announced_it(gateway: str) -> None:
    async with Client(f"{gateway}/servers/alpha/mcp") as client:
        assert "fresh" not in {t.name for t in (await client.list_tools()).tools}
        await client.call_tool("add_tool", {"name": "fresh"})  # the upstream sends tools/list_changed
        result = await client.call_tool("fresh", {"text": "hello"})
        assert result.content[0].text == "hello"  # type: ignore[union-attr]
        await client.call_tool("remove_tool", {"name": "fresh"})


@pytest.mark.parametrize("arguments", [{"text": "x", "n": 2**60}, "nested"])
async def test_unrecordable_arguments_get_an_error_at_once_and_the_session_keeps_serving(
    gateway: str, arguments: object
) -> None:
    if arguments == "nested":
        deep: dict[str, object] = {"text": "x"}
        for _ in range(70):  # deeper than the masker's limit
            deep = {"a": deep}
        arguments = deep
    url = f"{gateway}/servers/alpha/mcp"
    async with httpx.AsyncClient(timeout=5) as http:  # a hung POST fails the test by timing out
        headers = await open_raw_session(http, url)
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": arguments}}
        refused = (await http.post(url, json=call, headers=headers)).json()
        assert refused["error"]["code"] == codes.INVALID_PARAMS and "not forwarded" in refused["error"]["message"]
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "ok"}}}
        assert (await http.post(url, json=call, headers=headers)).json()["result"]["content"][0]["text"] == "ok"
