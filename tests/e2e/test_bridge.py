"""``bastion connect URL``: the stdio ↔ Streamable HTTP bridge, run as a real subprocess and driven
by the official SDK's stdio client (what a desktop client that only launches stdio servers does).
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError
from tests.e2e.gateway import PYTHON, echo_upstream, free_port, running_gateway

from bastion.jsonrpc import codes

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

WAIT_S = 20.0


def bridge(url: str) -> StdioServerParameters:
    return StdioServerParameters(command=PYTHON, args=["-m", "bastion", "connect", url])


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    with running_gateway({"store": "sqlite:///:memory:", "upstreams": {"x": echo_upstream("x")}}) as url:
        yield url


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tools_are_listed_and_called_when_client_speaks_stdio_to_the_bridge(gateway: str, mode: str) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    with anyio.fail_after(WAIT_S):
        async with Client(bridge(f"{gateway}/servers/x/mcp"), mode=mode) as client:
            assert client.server_info is not None and client.server_info.name == "x"
            assert client.protocol_version == "2025-11-25"
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"echo", "slow", "whoami"} <= names
            result = await client.call_tool("echo", {"text": "through the bridge ✓"})
            assert result.is_error is False
            assert result.content[0].text == "through the bridge ✓"  # type: ignore[union-attr]
            slow = await client.call_tool("slow", {"seconds": 0.1}, progress_callback=on_progress)
            assert slow.content[0].text == "slept 0.1"  # type: ignore[union-attr]
    assert progress == [0.0, 1.0]


async def test_errors_pass_through_unchanged_when_bridged(gateway: str) -> None:
    with anyio.fail_after(WAIT_S):
        async with Client(bridge(f"{gateway}/servers/x/mcp"), mode="legacy") as client:
            # A tool that ran and failed: an isError result, relayed as a result.
            failed = await client.call_tool("remove_tool", {"name": "never-added"})
            assert failed.is_error is True
            # A call Bastion refuses: the JSON-RPC error code crosses the bridge unchanged.
            with pytest.raises(MCPError) as info:
                await client.call_tool("nosuch", {})
    assert info.value.error.code == codes.INVALID_PARAMS


async def test_initialize_fails_with_upstream_unavailable_when_gateway_is_down() -> None:
    dead = f"http://127.0.0.1:{free_port()}/servers/x/mcp"
    errors: list[MCPError] = []
    with anyio.fail_after(WAIT_S):
        try:
            async with Client(bridge(dead), mode="legacy"):
                pytest.fail("initialize succeeded without a gateway")
        except* MCPError as group:  # the SDK raises it from inside its task group
            errors.extend(_leaves(group))
    assert [e.error.code for e in errors] == [codes.UPSTREAM_UNAVAILABLE]


def _leaves(group: BaseExceptionGroup[MCPError]) -> list[MCPError]:
    out: list[MCPError] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
