"""The test upstreams in tests/servers behave as their docstrings promise, over stdio and HTTP.

Stdio is driven with raw JSON-RPC lines at protocol 2025-11-25 (what a handshake-era gateway
speaks), so framing faults (garbage, crash) are observed exactly as a gateway would see them.
Every read has a deadline; nothing here sleeps to synchronise.
"""

import json
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from harness import CONFORMANCE_SERVER, ECHO_SERVER, serve_upstream
from mcp import Client

sys.path.insert(0, str(ECHO_SERVER.parent))
try:
    from echo_server import CRASH_EXIT_CODE, GARBAGE_EXIT_CODE, GARBAGE_LINE, SECRETS
finally:
    sys.path.remove(str(ECHO_SERVER.parent))

pytestmark = pytest.mark.e2e

READ_TIMEOUT_S = 15.0
PROTOCOL = "2025-11-25"


class StdioPeer:
    """A raw newline-delimited JSON-RPC peer on a child process's stdin/stdout."""

    def __init__(self, proc: "subprocess.Popen[bytes]") -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self._stdin = proc.stdin
        self._stdout = proc.stdout
        self._next_id = 1

    def send(self, message: dict[str, Any]) -> None:
        self._stdin.write(json.dumps(message).encode() + b"\n")
        self._stdin.flush()

    def read_line(self, timeout_s: float = READ_TIMEOUT_S) -> bytes:
        """The next raw stdout line; b"" at EOF. Raises TimeoutError after `timeout_s`."""
        with selectors.DefaultSelector() as sel:
            sel.register(self._stdout, selectors.EVENT_READ)
            if not sel.select(timeout=timeout_s):
                raise TimeoutError(f"no stdout line within {timeout_s}s")
        return self._stdout.readline()

    def request(self, method: str, params: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[bytes]]:
        """Send a request; return its response and every other line seen before it."""
        rid = self._next_id
        self._next_id += 1
        self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}})
        deadline = time.monotonic() + READ_TIMEOUT_S
        others: list[bytes] = []
        while (left := deadline - time.monotonic()) > 0:
            line = self.read_line(left)
            if not line:
                raise EOFError(f"server exited (rc={self.proc.poll()}) before answering {method}")
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                others.append(line)
                continue
            if message.get("id") == rid and ("result" in message or "error" in message):
                return message, others
            others.append(line)
        raise TimeoutError(f"no response to {method} within {READ_TIMEOUT_S}s")

    def initialize(self) -> dict[str, Any]:
        params = {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        response, _ = self.request("initialize", params)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return response["result"]  # type: ignore[no-any-return]

    def call(self, tool: str, arguments: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[bytes]]:
        return self.request("tools/call", {"name": tool, "arguments": arguments or {}})


@contextmanager
def stdio_server(script: Path, *args: str) -> Iterator[StdioPeer]:
    proc = subprocess.Popen(
        [sys.executable, str(script), "stdio", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
    )
    try:
        yield StdioPeer(proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def _text(response: dict[str, Any]) -> str:
    return "".join(c["text"] for c in response["result"]["content"] if c["type"] == "text")


def test_echo_stdio_identity_and_list_changed() -> None:
    with stdio_server(ECHO_SERVER, "--name", "alpha") as peer:
        init = peer.initialize()
        assert init["serverInfo"]["name"] == "alpha"
        assert init["capabilities"]["tools"]["listChanged"] is True

        tools, _ = peer.request("tools/list")
        names = {t["name"] for t in tools["result"]["tools"]}
        assert {"echo", "slow", "crash", "garbage", "secrets", "whoami", "add_tool", "remove_tool"} <= names

        assert _text(peer.call("echo", {"text": "héllo"})[0]) == "héllo"
        assert _text(peer.call("whoami")[0]) == "alpha"

        added, before = peer.call("add_tool", {"name": "zeta"})
        assert _text(added) == "added zeta"
        assert [json.loads(line)["method"] for line in before] == ["notifications/tools/list_changed"]
        tools, _ = peer.request("tools/list")
        assert "zeta" in {t["name"] for t in tools["result"]["tools"]}
        assert _text(peer.call("zeta", {"text": "dyn"})[0]) == "dyn"

        removed, before = peer.call("remove_tool", {"name": "zeta"})
        assert _text(removed) == "removed zeta"
        assert [json.loads(line)["method"] for line in before] == ["notifications/tools/list_changed"]


def test_echo_secrets_contain_every_fake_value() -> None:
    with stdio_server(ECHO_SERVER) as peer:
        peer.initialize()
        response, _ = peer.call("secrets")
    text = _text(response)
    assert [k for k, v in SECRETS.items() if v not in text] == []
    assert response["result"]["structuredContent"]["result"] == text


def test_echo_garbage_then_continue() -> None:
    with stdio_server(ECHO_SERVER) as peer:
        peer.initialize()
        response, before = peer.call("garbage", {"then": "continue"})
        assert before == [GARBAGE_LINE]
        assert _text(response) == "garbage sent"
        assert _text(peer.call("echo", {"text": "still alive"})[0]) == "still alive"


def test_echo_garbage_then_exit() -> None:
    with stdio_server(ECHO_SERVER) as peer:
        peer.initialize()
        with pytest.raises(EOFError):
            peer.call("garbage", {"then": "exit"})
        assert peer.proc.wait(timeout=READ_TIMEOUT_S) == GARBAGE_EXIT_CODE


def test_echo_crash_exits_without_answering() -> None:
    with stdio_server(ECHO_SERVER) as peer:
        peer.initialize()
        with pytest.raises(EOFError):
            peer.call("crash")
        assert peer.proc.wait(timeout=READ_TIMEOUT_S) == CRASH_EXIT_CODE


def test_conformance_server_over_stdio() -> None:
    with stdio_server(CONFORMANCE_SERVER) as peer:
        init = peer.initialize()
        assert {"tools", "resources", "prompts", "logging", "completions"} <= init["capabilities"].keys()
        assert init["capabilities"]["resources"]["subscribe"] is True
        tools, _ = peer.request("tools/list")
        assert len(tools["result"]["tools"]) == 14  # 13 test_* tools + json_schema_2020_12_tool
        response, _ = peer.call("test_simple_text")
        assert _text(response) == "This is a simple text response for testing."


@pytest.mark.anyio
async def test_two_echo_instances_over_http_collide_on_tool_names() -> None:
    with (
        serve_upstream(ECHO_SERVER, "--name", "alpha") as url_a,
        serve_upstream(ECHO_SERVER, "--name", "beta") as url_b,
    ):
        async with Client(url_a) as a, Client(url_b) as b:
            names_a = {t.name for t in (await a.list_tools()).tools}
            names_b = {t.name for t in (await b.list_tools()).tools}
            who_a = await a.call_tool("whoami", {})
            who_b = await b.call_tool("whoami", {})
            slow = await b.call_tool("slow", {"seconds": 0.01})
    assert names_a == names_b and "echo" in names_a
    assert [c.text for c in who_a.content if c.type == "text"] == ["alpha"]
    assert [c.text for c in who_b.content if c.type == "text"] == ["beta"]
    assert [c.text for c in slow.content if c.type == "text"] == ["slept 0.01"]
