"""Operating the gateway: health, readiness, metrics, trace correlation, per-caller upstream
credentials, and a graceful stop that lets calls in flight finish."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError
from tests.e2e.gateway import (
    complete_config,
    echo_upstream,
    free_port,
    open_raw_session,
    running_gateway,
    signing_key_file,
)

from bastion.jsonrpc import codes
from bastion.storage import RecordQuery, open_store

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]



def first_mcp_error(exc: BaseException) -> MCPError:
    """The MCPError inside what the SDK raised from a failed connect (it wraps it in groups)."""
    if isinstance(exc, MCPError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_mcp_error(inner)
            if found is not None:
                return found
    raise AssertionError(f"no MCPError in {exc!r}")


async def test_health_ready_and_metrics_report_state_when_gateway_runs() -> None:
    closed_port = free_port()
    config = {"upstreams": {"alpha": echo_upstream("alpha"), "down": {"url": f"http://127.0.0.1:{closed_port}/mcp"}}}
    with running_gateway(config) as base:
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{base}/healthz")).json() == {"status": "ok"}
            ready = await http.get(f"{base}/readyz")
            assert ready.status_code == 503
            checks = ready.json()["checks"]
            assert checks["upstream:alpha"] == "ok"
            assert checks["audit_store"] == "ok"
            assert checks["upstream:down"].startswith("cannot connect")
        async with Client(f"{base}/servers/alpha/mcp") as client:
            await client.call_tool("echo", {"text": "x"})
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"{base}/metrics")).text
    assert 'bastion_requests_total{method="tools/call",outcome="ok",upstream="alpha"} 1.0' in text
    assert "bastion_audit_records_committed" in text
    assert "bastion_request_seconds_bucket" in text


async def test_metrics_count_witness_copies_and_sink_deliveries_when_both_are_configured(tmp_path: Path) -> None:
    key_file = signing_key_file(str(tmp_path), "test-metrics")
    config = {
        "upstreams": {"alpha": echo_upstream("alpha")},
        "audit": {"signing_key_file": key_file, "origin": "test-metrics", "checkpoint_every_records": 2,
                  "witnesses": {"directory": str(tmp_path / "witness")},
                  "sinks": [{"type": "jsonl", "name": "siem-file", "path": str(tmp_path / "records.jsonl")}]},
    }
    with running_gateway(config, workdir=str(tmp_path)) as base:
        async with Client(f"{base}/servers/alpha/mcp") as client:
            await client.call_tool("echo", {"text": "x"})
        async with httpx.AsyncClient() as http:
            for _ in range(100):  # both deliver off the call path: wait until they caught up (bounded)
                text = (await http.get(f"{base}/metrics")).text
                found = {name: float(value) for name, value in re.findall(r"^(bastion_audit_\w+)(?:\{[^}]*\})? (\S+)$",
                                                                          text, re.MULTILINE)}
                caught_up = (found["bastion_audit_witness_delivered"] == found["bastion_audit_checkpoints"]
                             and found["bastion_audit_sink_records_sent"] == found["bastion_audit_records_committed"])
                if caught_up:
                    break
                await asyncio.sleep(0.05)
    assert caught_up, text
    assert found["bastion_audit_checkpoints"] >= 2 and found["bastion_audit_records_committed"] >= 5
    copies = len(list((tmp_path / "witness").rglob("*.note")))
    # Plus what shutdown signs after the read: a checkpoint with gateway_stopped, then the closing one.
    assert found["bastion_audit_witness_delivered"] + 1 <= copies <= found["bastion_audit_witness_delivered"] + 2
    assert 'bastion_audit_sink_records_dropped{sink="siem-file"} 0.0' in text
    assert "bastion_audit_witness_failures 0.0" in text


async def test_traceparent_is_recorded_when_client_sends_one(tmp_path: Path) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with running_gateway({"upstreams": {"alpha": echo_upstream("alpha")}}, workdir=str(tmp_path)) as base:
        url = f"{base}/servers/alpha/mcp"
        async with httpx.AsyncClient() as http:
            headers = await open_raw_session(http, url)
            call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "t"}}}
            response = await http.post(url, json=call, headers={**headers, "traceparent": traceparent})
            assert response.json()["result"]["content"][0]["text"] == "t"
    store = await open_store(f"sqlite:///{tmp_path}/audit.db")
    try:
        entries = await store.search_entries(RecordQuery(tool="echo"))
    finally:
        await store.aclose()
    bodies = [json.loads(e.body) for e in entries]
    assert {b["kind"] for b in bodies} == {"request", "response"}
    assert all(b["correlation"]["traceparent"] == traceparent for b in bodies)


async def test_caller_credentials_choose_upstream_env_when_caller_matches() -> None:
    upstream = echo_upstream("ignored")
    upstream["command"] = upstream["command"][:-2]  # drop --name: ECHO_SERVER_NAME decides the name
    config = {
        "upstreams": {
            "creds": {**upstream, "credentials": [{"subject": "anonymous", "env": {"ECHO_SERVER_NAME": "for-anonymous"}}]},
            "nobody": {**upstream, "credentials": [{"subject": "alice", "env": {"ECHO_SERVER_NAME": "alice"}}]},
        }
    }
    with running_gateway(config) as base:
        async with Client(f"{base}/servers/creds/mcp") as client:
            assert (await client.call_tool("whoami", {})).content[0].text == "for-anonymous"  # type: ignore[union-attr]
        with pytest.raises(BaseException) as info:
            async with Client(f"{base}/servers/nobody/mcp", mode="legacy"):
                pass
        assert first_mcp_error(info.value).error.code == codes.POLICY_DENIED


async def test_call_in_flight_completes_when_gateway_is_stopped(tmp_path: Path) -> None:
    port = free_port()
    config = complete_config({"upstreams": {"alpha": echo_upstream("alpha")}}, port, str(tmp_path))
    (tmp_path / "bastion.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion", "serve", "--config", str(tmp_path / "bastion.yaml")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/servers/alpha/mcp"
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            for _ in range(200):
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)  # polling a subprocess that has no other ready signal
            headers = await open_raw_session(http, url)
            get_stream = asyncio.create_task(http.get(url, headers={**headers, "accept": "text/event-stream"}))
            call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "slow", "arguments": {"seconds": 1.5}}}
            slow = asyncio.create_task(http.post(url, json=call, headers=headers))
            await asyncio.sleep(0.5)  # let the call reach the upstream before the stop signal
            proc.send_signal(signal.SIGTERM)
            response = await asyncio.wait_for(slow, 15)
            assert response.status_code == 200
            assert "slept 1.5" in response.text
            await asyncio.wait_for(get_stream, 15)  # the GET stream ended instead of holding the stop
        # uvicorn re-raises the stop signal once shut down, so a clean stop exits with -SIGTERM.
        assert await asyncio.to_thread(proc.wait, 20) in (0, -signal.SIGTERM)
        assert proc.stderr is not None
        assert b"Application shutdown complete" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


async def test_audit_mode_switch_is_recorded_when_configuration_changes_it(tmp_path: Path) -> None:
    from tests.e2e.gateway import signing_key_file

    key = signing_key_file(str(tmp_path), "modes")
    upstreams = {"alpha": echo_upstream("alpha")}
    for mode in ("durable", "best_effort", "best_effort"):
        audit = {"signing_key_file": key, "origin": "test/modes", "mode": mode}
        with running_gateway({"upstreams": upstreams, "audit": audit}, workdir=str(tmp_path)):
            pass
    store = await open_store(f"sqlite:///{tmp_path}/audit.db")
    try:
        switches = await store.search_entries(RecordQuery(origin="test/modes", kind="mode_changed"))
    finally:
        await store.aclose()
    assert [json.loads(e.body)["detail"] for e in switches] == [
        {"from": "durable", "to": "best_effort", "reason": "configuration"}
    ]
