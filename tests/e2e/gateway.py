"""Run a real Bastion (uvicorn, real sockets) in a background thread for end-to-end tests."""

from __future__ import annotations

import contextlib
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bastion.app import create_app
from bastion.audit.keys import generate_signing_key, render_signing_key
from bastion.config import parse_settings

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
ECHO_SERVER = str(ROOT / "tests" / "servers" / "echo_server.py")
NODE_BIN = ROOT / "tests" / "node" / "node_modules" / ".bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def echo_upstream(name: str, **extra: Any) -> dict[str, Any]:
    return {"command": [PYTHON, ECHO_SERVER, "stdio", "--name", name], **extra}


def signing_key_file(directory: str, name: str = "test-log") -> str:
    path = Path(directory) / f"{name}.key"
    path.write_text(render_signing_key(generate_signing_key(name)) + "\n")
    return str(path)


def complete_config(config: dict[str, Any], port: int, workdir: str) -> dict[str, Any]:
    """Fill in what every gateway needs and a test rarely cares about: anonymous identity on
    loopback, an allow-all policy, a fresh SQLite audit log with its own signing key."""
    full = {
        "store": f"sqlite:///{workdir}/audit.db",
        "identity": {"allow_anonymous": True, "resource_url": f"http://127.0.0.1:{port}"},
        "policy": {"default": "allow"},
        **config,
        "listen": f"127.0.0.1:{port}",
    }
    if full.get("policy_file"):
        full.pop("policy", None)
    full.setdefault("audit", {"signing_key_file": signing_key_file(workdir), "origin": "test/gateway"})
    return full


@contextlib.contextmanager
def running_gateway(config: dict[str, Any], workdir: str | None = None) -> Iterator[str]:
    """Yield the base URL of a Bastion serving ``config`` (listen is chosen here)."""
    port = free_port()
    own_dir = tempfile.TemporaryDirectory(prefix="bastion-e2e-") if workdir is None else None
    settings = parse_settings(complete_config(config, port, workdir or own_dir.name))  # type: ignore[union-attr]
    try:
        with serve_in_thread(create_app(settings), port):
            yield f"http://127.0.0.1:{port}"
    finally:
        if own_dir is not None:
            own_dir.cleanup()


@contextlib.contextmanager
def serve_in_thread(app: Any, port: int, start_timeout_s: float = 20.0) -> Iterator[None]:
    """Serve an ASGI app with uvicorn on 127.0.0.1:``port`` in a thread, from started to stopped."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:  # uvicorn offers no event to wait on; bounded poll
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(start_timeout_s)


MCP_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


async def open_raw_session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    """Initialize an MCP session with raw HTTP; returns the headers every later request needs."""
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    response = await http.post(url, json=init, headers=MCP_HEADERS)
    assert response.status_code == 200
    headers = {**MCP_HEADERS, "mcp-session-id": response.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    assert (await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)).status_code == 202
    return headers
