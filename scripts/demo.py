"""`make demo`: Bastion in front of a real MCP server, one scripted agent session, the audit trail verified.

1. writes a configuration and a fresh audit signing key under .demo/;
2. starts `bastion serve` (the real CLI) in front of @modelcontextprotocol/server-everything (stdio);
3. runs an agent session through it with the official MCP Python SDK client;
4. stops the gateway, prints the audit trail (a read the log itself records) and verifies it offline.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError

from bastion.audit.keys import generate_signing_key, render_signing_key, render_vkey

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".demo"
EVERYTHING = ROOT / "tests/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js"


def say(text: str) -> None:
    print(f"\033[1m▶ {text}\033[0m", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(port: int) -> Path:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    key = generate_signing_key("bastion-demo")
    (WORK / "audit.key").write_text(render_signing_key(key) + "\n")
    (WORK / "audit.key").chmod(0o600)
    (WORK / "keyring.txt").write_text(render_vkey(key.public()) + "\n")
    config = {
        "listen": f"127.0.0.1:{port}",
        "store": f"sqlite:///{WORK}/bastion.db",
        "identity": {"resource_url": f"http://127.0.0.1:{port}", "allow_anonymous": True},
        "audit": {"signing_key_file": str(WORK / "audit.key"), "origin": "demo/bastion", "checkpoint_every_records": 8},
        "masking": {"default_profiles": ["all"]},
        "policy": {
            "default": "allow",
            "rules": [
                {"id": "no-env-dump", "match": {"server": "everything", "tool": "get-env"}, "action": "deny",
                 "reason": "environment dumps leak secrets"},
                {"id": "sums-are-small", "match": {"server": "everything", "tool": "get-sum", "args": {"a": {"gt": 1000}}},
                 "action": "deny", "reason": "only small sums in the demo"},
            ],
        },
        "upstreams": {"everything": {"command": [shutil.which("node") or "node", str(EVERYTHING), "stdio"]}},
    }
    path = WORK / "bastion.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_gateway(config: Path, port: int) -> subprocess.Popen[bytes]:
    log = open(WORK / "gateway.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "bastion", "serve", "--config", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    sys.exit(f"the gateway did not start; see {WORK / 'gateway.log'}")


async def agent_session(url: str) -> None:
    progress: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(f"{value:g}/{total:g}" if total else f"{value:g}")

    async with Client(url, mode="auto") as client:
        say(f"connected to {url}: server {client.server_info.name if client.server_info else '?'}, protocol {client.protocol_version}")
        tools = [t.name for t in (await client.list_tools()).tools]
        say(f"{len(tools)} tools listed; 'get-env' is hidden by policy: {'get-env' not in tools}")
        result = await client.call_tool("echo", {"message": "Mail alice@example.com, card 4111 1111 1111 1111"})
        say(f"echo came back masked: {result.content[0].text!r}")  # type: ignore[union-attr]
        result = await client.call_tool("get-sum", {"a": 2, "b": 3})
        say(f"get-sum(2, 3) = {result.content[0].text!r}")  # type: ignore[union-attr]
        for name, args in (("get-sum", {"a": 5000, "b": 1}), ("get-env", {})):
            try:
                await client.call_tool(name, args)
            except MCPError as exc:
                say(f"{name} refused: code {exc.error.code}, {exc.error.message!r}")
        await client.call_tool("trigger-long-running-operation", {"duration": 1, "steps": 3}, progress_callback=on_progress)
        say(f"long-running operation reported progress {progress}")
        resources = (await client.list_resources()).resources
        if resources:
            contents = await client.read_resource(resources[0].uri)
            say(f"read resource {resources[0].uri} ({len(contents.contents)} item)")


def main() -> int:
    if not EVERYTHING.exists():
        sys.exit("server-everything is not installed: run scripts/install-test-peers.sh (make demo does)")
    port = free_port()
    config = write_config(port)
    say(f"starting Bastion on 127.0.0.1:{port} in front of server-everything (config {config.relative_to(ROOT)})")
    proc = start_gateway(config, port)
    try:
        asyncio.run(agent_session(f"http://127.0.0.1:{port}/servers/everything/mcp"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    store = f"sqlite:///{WORK}/bastion.db"
    say("the audit trail:")
    # Reading the log is itself recorded: --config records this search to origin demo/bastion/cli.
    subprocess.run([sys.executable, "-m", "bastion", "audit", "search", "--config", str(config)], check=False)
    say("verifying the audit trail offline (records, Merkle tree, signed checkpoints):")
    verify = subprocess.run(
        [sys.executable, "-m", "bastion", "audit", "verify", "--store", store, "--keys", str(WORK / "keyring.txt")], check=False
    )
    say("audit trail verified" if verify.returncode == 0 else "audit trail did NOT verify")
    return verify.returncode


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
