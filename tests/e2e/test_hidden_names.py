"""A name the caller may not see is answered exactly like a name that does not exist — for tools
and for prompts — even when the client calls it without listing first (then Bastion lists)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError

from bastion.jsonrpc import codes
from tests.e2e.gateway import running_gateway
from tests.e2e.test_everything import everything_stdio

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    policy = {
        "default": "allow",
        "rules": [
            {"id": "no-env", "match": {"server": "everything", "tool": "get-env"}, "action": "deny"},
            {"id": "no-args-prompt", "match": {"server": "everything", "prompt": "args-prompt"}, "action": "deny"},
        ],
    }
    with running_gateway({"upstreams": {"everything": everything_stdio()}, "policy": policy}) as url:
        yield url


async def refusal(client: Client, kind: str, name: str) -> tuple[int, str]:
    with pytest.raises(MCPError) as info:
        if kind == "tool":
            await client.call_tool(name, {})
        else:
            await client.get_prompt(name, {})
    return info.value.error.code, info.value.error.message.replace(name, "<name>")


@pytest.mark.parametrize(("kind", "hidden"), [("tool", "get-env"), ("prompt", "args-prompt")])
async def test_hidden_name_answers_like_an_unknown_one_when_called_without_listing(
    gateway: str, kind: str, hidden: str
) -> None:
    async with Client(f"{gateway}/servers/everything/mcp") as client:
        hidden_refusal = await refusal(client, kind, hidden)
        unknown_refusal = await refusal(client, kind, "no-such-name")
    assert hidden_refusal == unknown_refusal == (codes.INVALID_PARAMS, f"Unknown {kind}: <name>")
