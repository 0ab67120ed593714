"""Fail-closed under kill -9: every reply a client received is in the log, and the log verifies.

A real ``python -m bastion serve`` subprocess (SQLite file or PostgreSQL store, stdio echo upstream) takes concurrent
tools/call load from raw httpx clients and is SIGKILLed mid-load. The store is then opened
directly: each received reply must have its request and response records (matched by session id,
JSON-RPC id and outcome). One restart and clean stop signs a checkpoint over what survived, after
which the offline verifier must find nothing wrong.

``GatewayProcess`` and ``McpSession`` are reused by test_canary.py.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from tests.contract.backends import PERSISTENT_BACKENDS, provision
from tests.e2e.gateway import PYTHON, ROOT, complete_config, echo_upstream, free_port, signing_key_file

from bastion.audit.entry import LogEntry, StoredCheckpoint
from bastion.audit.keys import KeyRing, load_signing_key
from bastion.storage import AuditStore, open_store
from bastion.verifier import verify_log

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

PROTOCOL_VERSION = "2025-11-25"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
CALL_TIMEOUT_S = 10.0
CLIENTS = 8
MAX_CALLS_PER_CLIENT = 150
KILL_AFTER_REPLIES = 60
LOAD_TIMEOUT_S = 30.0


class GatewayProcess:
    """``python -m bastion serve --config FILE`` as a child process, stderr captured to a file."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.config = complete_config(config, self.port, str(workdir))
        self.config_path = workdir / "bastion.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        self.stderr_path = workdir / "gateway.stderr"
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def store_url(self) -> str:
        return str(self.config["store"])

    @property
    def db_path(self) -> Path:
        return Path(self.store_url.removeprefix("sqlite:///"))

    async def start(self) -> None:
        """Spawn the gateway and return once /readyz answers 200 (bounded)."""
        with self.stderr_path.open("ab") as stderr:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; every wait goes through to_thread
                [PYTHON, "-m", "bastion", "serve", "--config", str(self.config_path)],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        async with httpx.AsyncClient(timeout=1.0) as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"gateway exited with {self.proc.returncode}: {self.stderr_text()[-2000:]}")
                try:
                    if (await http.get(f"{self.url}/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gateway not ready in {START_TIMEOUT_S}s: {self.stderr_text()[-2000:]}")
                await asyncio.sleep(0.05)  # polling an external process's readiness; bounded by the deadline

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(self.proc.wait, STOP_TIMEOUT_S) == -signal.SIGKILL

    async def stop(self) -> int:
        """SIGTERM and wait for the exit; returns the exit code.

        uvicorn (>= 0.29) re-raises the captured signal after its graceful shutdown, so a clean stop
        exits with -SIGTERM, not 0; the gateway_stopped record is what proves the shutdown ran.
        """
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def ensure_dead(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace") if self.stderr_path.exists() else ""


class McpSession:
    """A raw Streamable HTTP MCP client session (initialize, initialized, then requests)."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url
        self.session_id: str | None = None
        self.next_id = 1

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                   "mcp-protocol-version": PROTOCOL_VERSION}
        if self.session_id is not None:
            headers["mcp-session-id"] = self.session_id
        return headers

    async def open(self) -> None:
        response = await self.http.post(self.url, headers=self._headers(), content=orjson.dumps({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                       "clientInfo": {"name": "bastion-e2e", "version": "1"}}}))
        assert response.status_code == 200, response.text
        self.session_id = response.headers["mcp-session-id"]
        assert "result" in _reply_of(response, 0)
        note = await self.http.post(self.url, headers=self._headers(),
                                    content=orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        assert note.status_code == 202

    async def request(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Send one request; return (its id, the JSON-RPC reply). Raises httpx errors when the gateway is gone."""
        request_id, self.next_id = self.next_id, self.next_id + 1
        response = await self.http.post(self.url, headers=self._headers(), content=orjson.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
        response.raise_for_status()
        return request_id, _reply_of(response, request_id)

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return await self.request("tools/call", {"name": name, "arguments": arguments})


def _reply_of(response: httpx.Response, request_id: int) -> dict[str, Any]:
    """The JSON-RPC reply to ``request_id`` from a JSON or SSE response body."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        messages = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")
                    and line[5:].strip()]
    else:
        body = response.json()
        messages = body if isinstance(body, list) else [body]
    replies = [m for m in messages if m.get("id") == request_id and ("result" in m or "error" in m)]
    assert len(replies) == 1, response.text
    return replies[0]  # type: ignore[no-any-return]


def outcome_of(reply: dict[str, Any]) -> str:
    """The audit outcome a reply implies (audit stage: error, isError -> error, else ok)."""
    if "error" in reply or reply["result"].get("isError"):
        return "error"
    return "ok"


async def read_log(store_url: str, origin: str) -> tuple[list[LogEntry], list[StoredCheckpoint]]:
    store: AuditStore = await open_store(store_url)
    try:
        entries = [entry async for entry in store.stream_entries(origin)]
        checkpoints = await store.fetch_checkpoints(origin, 0, 100_000)
    finally:
        await store.aclose()
    return entries, checkpoints


def correlation(entry: LogEntry) -> tuple[str | None, Any, str | None]:
    body = orjson.loads(entry.body)
    corr = body.get("correlation") or {}
    return corr.get("session_id"), corr.get("jsonrpc_id"), body.get("outcome")


@dataclass
class Load:
    """Replies received by clients, and how many requests were on the wire."""

    received: list[tuple[str, int, str]] = field(default_factory=list)
    in_flight: int = 0
    enough: asyncio.Event = field(default_factory=asyncio.Event)


async def drive(session: McpSession, client: int, load: Load) -> None:
    for call in range(MAX_CALLS_PER_CLIENT):
        load.in_flight += 1
        try:
            request_id, reply = await session.call_tool("echo", {"text": f"client {client} call {call}"})
        except httpx.HTTPError:
            return  # the gateway is gone; this request's fate is unknown to the client
        finally:
            load.in_flight -= 1
        assert reply.get("result", {}).get("content", [{}])[0].get("text") == f"client {client} call {call}", reply
        assert session.session_id is not None
        load.received.append((session.session_id, request_id, outcome_of(reply)))
        if len(load.received) >= KILL_AFTER_REPLIES:
            load.enough.set()


@pytest.fixture(params=PERSISTENT_BACKENDS)
async def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    key_file = signing_key_file(str(tmp_path), "test-crash")
    async with provision(request.param, tmp_path) as store_url:
        process = GatewayProcess({"upstreams": {"echo": echo_upstream("echo")}, "store": store_url,
                                  "audit": {"signing_key_file": key_file, "origin": "test-crash"}}, tmp_path)
        try:
            yield process
        finally:
            process.ensure_dead()


async def test_every_received_reply_is_logged_and_the_log_verifies_when_the_gateway_is_killed_mid_load(
    gateway: GatewayProcess,
) -> None:
    origin = gateway.config["audit"]["origin"]
    await gateway.start()
    load = Load()
    async with httpx.AsyncClient(timeout=CALL_TIMEOUT_S, limits=httpx.Limits(max_connections=CLIENTS * 2)) as http:
        sessions = [McpSession(http, f"{gateway.url}/servers/echo/mcp") for _ in range(CLIENTS)]
        await asyncio.gather(*(s.open() for s in sessions))
        async with asyncio.timeout(LOAD_TIMEOUT_S):
            tasks = [asyncio.create_task(drive(s, i, load)) for i, s in enumerate(sessions)]
            await load.enough.wait()
            in_flight_at_kill = load.in_flight
            await gateway.kill()
            await asyncio.gather(*tasks)
    received_at_kill = len(load.received)
    assert received_at_kill >= KILL_AFTER_REPLIES
    assert received_at_kill < CLIENTS * MAX_CALLS_PER_CLIENT, "load finished before the kill"
    assert in_flight_at_kill > 0, "no request was on the wire when the gateway was killed"

    # 1. Every reply a client received has its request and response records.
    entries, checkpoints = await read_log(gateway.store_url, origin)
    requests = {correlation(e)[:2] for e in entries if e.kind == "request"}
    responses = {correlation(e) for e in entries if e.kind == "response"}
    missing_requests = [r for r in load.received if r[:2] not in requests]
    missing_responses = [r for r in load.received if r not in responses]
    assert missing_requests == [] and missing_responses == []
    assert len(responses) >= len(load.received)  # replies committed but lost on the wire are allowed

    # 2. The kill left an unsigned tail (what the restart must cover).
    assert [e.seq for e in entries] == list(range(len(entries)))
    assert max((c.tree_size for c in checkpoints), default=0) < len(entries)

    # 3. Restart once and stop cleanly: the log resumes, and a checkpoint signs everything.
    await gateway.start()
    assert await gateway.stop() in (0, -signal.SIGTERM)
    entries, checkpoints = await read_log(gateway.store_url, origin)
    assert max(c.tree_size for c in checkpoints) == len(entries)
    assert [e.kind for e in entries[-2:]] == ["gateway_started", "gateway_stopped"]
    key = load_signing_key(path=Path(gateway.config["audit"]["signing_key_file"]))
    report = verify_log(entries, checkpoints, KeyRing([key.public()]))
    assert report.problems == [] and report.ok
    assert report.summary.records == len(entries)
