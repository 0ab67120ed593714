"""An upstream whose tools/list has more than one page: policy counts the names only once every
page was read, so a tool on a page not read is never taken for an unknown one, and a listing that
breaks off refuses the call (``listing_unavailable``) until a later listing completes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError
from tests.e2e.gateway import running_gateway
from tests.e2e.test_rug_pull import HONEST, SHIFTY, denied_records

from bastion.jsonrpc import codes

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def config(first_page: Path, second_page: Path) -> dict[str, object]:
    env = {"SHIFTY_DESCRIPTION_FILE": str(first_page), "SHIFTY_SECOND_PAGE_FILE": str(second_page)}
    return {"upstreams": {"db": {"command": [sys.executable, SHIFTY], "env": env}}, "policy": {"default": "allow"}}


async def denied_reasons(workdir: Path) -> list[tuple[str, str]]:
    bodies = sorted(await denied_records(workdir), key=lambda b: b["seq"])
    return [(b["what"]["name"], b["decision"]["reason"]) for b in bodies]


async def test_tool_on_a_page_the_client_did_not_read_is_callable(tmp_path: Path) -> None:
    (tmp_path / "first.txt").write_text(HONEST)
    (tmp_path / "second.txt").write_text("Builds a report.")
    with running_gateway(config(tmp_path / "first.txt", tmp_path / "second.txt"), workdir=str(tmp_path)) as base:
        async with Client(f"{base}/servers/db/mcp") as client:
            first = await client.list_tools()
            assert ([t.name for t in first.tools], first.next_cursor is not None) == (["query"], True)
            # The client stops after one page; the gateway lists the rest before deciding.
            assert (await client.call_tool("report", {"sql": "x"})).content[0].text == "1 row"  # type: ignore[union-attr]
            with pytest.raises(MCPError) as info:
                await client.call_tool("no-such-tool", {})
            assert info.value.error.message == "Unknown tool: no-such-tool"
    assert await denied_reasons(tmp_path) == [("no-such-tool", "the upstream does not list this tool")]


async def test_call_is_refused_while_a_later_page_fails_and_goes_through_once_it_lists(tmp_path: Path) -> None:
    (tmp_path / "first.txt").write_text(HONEST)
    second_page = tmp_path / "second.txt"  # missing: the second page fails
    with running_gateway(config(tmp_path / "first.txt", second_page), workdir=str(tmp_path)) as base:
        async with Client(f"{base}/servers/db/mcp") as client:
            for tool in ("report", "query"):  # not even a name on the first page: the catalogue is unknown
                with pytest.raises(MCPError) as info:
                    await client.call_tool(tool, {"sql": "x"})
                assert (info.value.error.code, (info.value.error.data or {}).get("reason")) == (
                    codes.POLICY_DENIED, "listing_unavailable")
            second_page.write_text("Builds a report.")
            assert (await client.call_tool("report", {"sql": "x"})).content[0].text == "1 row"  # type: ignore[union-attr]
    unreadable = "the upstream's tool listing could not be read"
    assert await denied_reasons(tmp_path) == [("report", unreadable), ("query", unreadable)]
