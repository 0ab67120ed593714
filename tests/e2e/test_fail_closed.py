"""No answer without a record: when the audit store cannot write, calls are refused — and not
performed — until it can again. Run on PostgreSQL, where a broken table is easy to arrange."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError

from bastion.jsonrpc import codes
from tests.e2e.gateway import echo_upstream, running_gateway

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.anyio]

DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"bastion_fc_{secrets.token_hex(4)}"
    yield name
    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    finally:
        await conn.close()


async def test_call_is_refused_and_not_performed_when_the_audit_store_cannot_write(schema: str) -> None:
    config = {"store": f"{DSN}?schema={schema}", "upstreams": {"alpha": echo_upstream("alpha")}}
    with running_gateway(config) as base:
        async with Client(f"{base}/servers/alpha/mcp") as client, Client(f"{base}/mcp") as federated:
            assert (await client.call_tool("echo", {"text": "before"})).content[0].text == "before"  # type: ignore[union-attr]

            admin = await asyncpg.connect(DSN)
            try:
                await admin.execute(f"ALTER TABLE {schema}.records RENAME TO records_broken")
                with pytest.raises(MCPError) as info:
                    await client.call_tool("add_tool", {"name": "side_effect"})
                assert info.value.error.code == codes.AUDIT_UNAVAILABLE
                # Refused before routing (no such upstream) and unrecordable: still answered.
                with pytest.raises(MCPError) as unrouted:
                    await federated.call_tool("nosuch__echo", {})
                assert unrouted.value.error.code == codes.AUDIT_UNAVAILABLE
                await admin.execute(f"ALTER TABLE {schema}.records_broken RENAME TO records")
            finally:
                await admin.close()

            # The store is back: calls go through again, and the refused one never ran upstream.
            assert (await client.call_tool("echo", {"text": "after"})).content[0].text == "after"  # type: ignore[union-attr]
            names = {t.name for t in (await client.list_tools()).tools}
            assert "side_effect" not in names
            assert "echo" in names
