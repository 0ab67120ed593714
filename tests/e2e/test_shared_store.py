"""Several gateway instances share one PostgreSQL database, each writing its own origin.

Two real ``bastion serve`` processes (one schema of the real server at 127.0.0.1:5432, origins
``gw-a`` and ``gw-b``, each with its own signing key) take concurrent calls at the same time.
Afterwards one search finds both instances' records, and one ``bastion audit verify`` without
``--origin`` checks every origin the database holds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.contract.backends import pg_schema
from tests.e2e.gateway import echo_upstream, signing_key_file
from tests.e2e.test_crash import CALL_TIMEOUT_S, GatewayProcess, McpSession

from bastion.audit.keys import load_signing_key, render_vkey
from bastion.cli.main import main

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.anyio]

ORIGINS = ("gw-a", "gw-b")
CALLS_PER_SESSION = 20
SESSIONS_PER_GATEWAY = 3


@pytest.fixture
async def gateways(tmp_path: Path) -> AsyncIterator[tuple[str, list[GatewayProcess]]]:
    async with pg_schema("shared") as store_url:
        processes = []
        for origin in ORIGINS:
            workdir = tmp_path / origin
            workdir.mkdir()
            key_file = signing_key_file(str(workdir), origin)
            processes.append(GatewayProcess({"upstreams": {"echo": echo_upstream("echo")}, "store": store_url,
                                             "audit": {"signing_key_file": key_file, "origin": origin}}, workdir))
        try:
            yield store_url, processes
        finally:
            for process in processes:
                process.ensure_dead()


async def drive(session: McpSession, tag: str) -> None:
    await session.open()
    for i in range(CALLS_PER_SESSION):
        _, reply = await session.call_tool("echo", {"text": f"{tag} {i}"})
        assert reply["result"]["content"][0]["text"] == f"{tag} {i}"


async def test_search_and_verify_span_every_origin_when_two_gateways_share_one_database(
    gateways: tuple[str, list[GatewayProcess]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_url, processes = gateways
    await asyncio.gather(*(p.start() for p in processes))  # both migrate the same schema at once
    async with httpx.AsyncClient(timeout=CALL_TIMEOUT_S) as http:
        await asyncio.gather(*(
            drive(McpSession(http, f"{p.url}/servers/echo/mcp"), f"{p.config['audit']['origin']}/{n}")
            for p in processes for n in range(SESSIONS_PER_GATEWAY)
        ))
    await asyncio.gather(*(p.stop() for p in processes))

    ring = tmp_path / "keys.txt"
    ring.write_text("".join(
        render_vkey(load_signing_key(path=Path(p.config["audit"]["signing_key_file"])).public()) + "\n"
        for p in processes
    ), encoding="utf-8")
    code = await asyncio.to_thread(main, ["audit", "verify", "--store", store_url, "--keys", str(ring)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "origins: gw-a, gw-b" in out.splitlines()[0]

    reader_key = signing_key_file(str(tmp_path), "auditor")
    code = await asyncio.to_thread(main, [
        "audit", "search", "--store", store_url, "--record-as", "auditor/cli", "--record-key", reader_key,
        "--kind", "response", "--tool", "echo", "--limit", "1000", "--json",
    ])
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    per_origin = {origin: [r for r in found if r["origin"] == origin] for origin in ORIGINS}
    expected = SESSIONS_PER_GATEWAY * CALLS_PER_SESSION
    assert {origin: len(rows) for origin, rows in per_origin.items()} == {origin: expected for origin in ORIGINS}
    texts = {r["body"]["result"]["released"]["content"][0]["text"] for r in found}
    assert f"gw-a/0 {CALLS_PER_SESSION - 1}" in texts and "gw-b/2 0" in texts
