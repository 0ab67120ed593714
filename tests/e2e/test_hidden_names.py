"""A name the caller may not see is answered exactly like a name that does not exist — for tools
and for prompts — even when the client calls it without listing first (then Bastion lists)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError

from bastion.jsonrpc import codes
from tests.e2e.gateway import running_gateway
from tests.e2e.test_everything import everything_stdio
from tests.e2e.test_identity import records

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@dataclass(frozen=True)
class Gateway:
    url: str
    workdir: str


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    policy = {
        "default": "allow",
        "rules": [
            {"id": "no-env", "match": {"server": "everything", "tool": "get-env"}, "action": "deny"},
            {"id": "no-args-prompt", "match": {"server": "everything", "prompt": "args-prompt"}, "action": "deny"},
        ],
    }
    with tempfile.TemporaryDirectory(prefix="bastion-e2e-") as workdir, running_gateway(
        {"upstreams": {"everything": everything_stdio()}, "policy": policy}, workdir=workdir
    ) as url:
        yield Gateway(url, workdir)


async def refusal(client: Client, kind: str, name: str) -> tuple[int, str]:
    with pytest.raises(MCPError) as info:
        if kind == "tool":
            await client.call_tool(name, {})
        else:
            await client.get_prompt(name, {})
    return info.value.error.code, info.value.error.message.replace(name, "<name>")


@pytest.mark.parametrize(("kind", "hidden"), [("tool", "get-env"), ("prompt", "args-prompt")])
async def test_hidden_name_answers_like_an_unknown_one_when_called_without_listing(
    gateway: Gateway, kind: str, hidden: str
) -> None:
    async with Client(f"{gateway.url}/servers/everything/mcp") as client:
        hidden_refusal = await refusal(client, kind, hidden)
        unknown_refusal = await refusal(client, kind, "no-such-name")
    assert hidden_refusal == unknown_refusal == (codes.INVALID_PARAMS, f"Unknown {kind}: <name>")
    # The auditor, unlike the caller, learns which it was.
    method = "tools/call" if kind == "tool" else "prompts/get"
    reasons = {b["what"]["name"]: b["decision"]["reason"]
               for b in await records(gateway.workdir, kind="response", outcome="denied")
               if b["what"]["method"] == method}
    assert reasons[hidden] == "hidden from this caller by policy"
    assert reasons["no-such-name"] == f"the upstream does not list this {kind}"
