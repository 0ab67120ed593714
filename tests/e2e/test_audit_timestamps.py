"""A real gateway with ``audit.timestamping``: its checkpoints get RFC 3161 tokens and ``verify`` accepts them.

The TSA is OpenSSL's reference responder (``openssl ts -reply``, tests/servers/openssl_tsa.py)
because no public TSA is reachable from the test environment.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from mcp.client.client import Client
from tests.e2e.gateway import echo_upstream, running_gateway, signing_key_file
from tests.servers.openssl_tsa import running_tsa

from bastion.audit.keys import load_signing_key, render_vkey
from bastion.cli.main import main
from bastion.storage import open_store

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

ORIGIN = "test/gateway"
WAIT_S = 20.0


async def test_gateway_checkpoints_are_stamped_and_verify_with_the_tsa_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = signing_key_file(str(tmp_path))
    with running_tsa(tmp_path / "pki") as tsa:
        config = {
            "upstreams": {"alpha": echo_upstream("alpha")},
            "audit": {
                "signing_key_file": key_file,
                "origin": ORIGIN,
                "checkpoint_every_records": 2,
                "timestamping": {"urls": [tsa.url], "ca_file": str(tsa.pki.root_cert), "poll_s": 0.05},
            },
        }
        with running_gateway(config, str(tmp_path)) as base:
            async with Client(f"{base}/servers/alpha/mcp") as client:
                await client.call_tool("echo", {"text": "stamp me"})
            async with httpx.AsyncClient() as http, asyncio.timeout(WAIT_S):
                while True:
                    metrics = (await http.get(f"{base}/metrics")).text
                    stamped = re.search(r"^bastion_audit_timestamps (\S+)$", metrics, re.MULTILINE)
                    if stamped and float(stamped.group(1)) >= 1:
                        break
                    await asyncio.sleep(0.05)
            assert re.search(r"^bastion_audit_timestamp_failures 0\.0$", metrics, re.MULTILINE)
        assert len(tsa.queries) >= 2  # at least one while serving, and the final checkpoint at shutdown
    store = await open_store(f"sqlite:///{tmp_path}/audit.db")
    try:
        latest = await store.fetch_latest_checkpoint(ORIGIN)
        tokens = await store.checkpoint_timestamps.fetch_timestamps(ORIGIN)
    finally:
        await store.aclose()
    assert latest is not None and tokens[-1].tree_size == latest.tree_size  # the final checkpoint is stamped too
    keys = tmp_path / "keys.txt"
    keys.write_text(render_vkey(load_signing_key(path=Path(key_file)).public()) + "\n")
    argv = ["audit", "verify", "--store", f"sqlite:///{tmp_path}/audit.db", "--keys", str(keys), "--origin", ORIGIN,
            "--tsa-certs", str(tsa.pki.root_cert)]
    capsys.readouterr()
    code = await asyncio.to_thread(main, argv)  # the CLI runs its own event loop
    text = capsys.readouterr().out
    assert code == 0, text
    assert f"timestamps: {len(tokens)} checkpoints carry a verified RFC 3161 token" in text
