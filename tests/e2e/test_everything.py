"""The reference server-everything (TypeScript SDK) behind Bastion, driven by the official Python
SDK client: every feature family crosses the gateway in both directions.

Over stdio (the module gateway) the whole surface is exercised, in ``auto`` and ``legacy`` client
modes; over Streamable HTTP and legacy HTTP+SSE upstreams, list + call + progress. Cancellation
is observed on the upstream's own stdin through a tap (a tiny relay that copies every line the
gateway writes to the child onto a local socket), so the test sees the ``notifications/cancelled``
the upstream receives rather than guessing from timing.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.abc
import mcp_types as types
import pytest
from mcp.client.client import Client
from mcp.client.session import ClientRequestContext
from tests.e2e.gateway import PYTHON, ROOT, free_port, running_gateway

sys.path.insert(0, str(ROOT / "tests" / "conformance"))
try:
    from harness import find_node
finally:
    sys.path.remove(str(ROOT / "tests" / "conformance"))

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.anyio,
    # logging/setLevel, resources/subscribe, ping and sampling are deprecated as of 2026-07-28
    # (the SDK warns); they are exactly the handshake-era features under test here.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

EVERYTHING = ROOT / "tests" / "node" / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
TINY_IMAGE_JS = EVERYTHING.parent / "tools" / "get-tiny-image.js"
STATIC_DOC_URI = "demo://resource/static/document/architecture.md"
WAIT_S = 15.0

# Relays the gateway's stdin lines to the child and copies each to 127.0.0.1:<port>.
TAP = """
import socket, subprocess, sys
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
child = subprocess.Popen(sys.argv[2:], stdin=subprocess.PIPE)
for line in sys.stdin.buffer:
    sock.sendall(line)
    child.stdin.write(line)
    child.stdin.flush()
child.stdin.close()
sock.close()
sys.exit(child.wait())
"""


def _node() -> str:
    return str(find_node())


def everything_stdio() -> dict[str, Any]:
    return {"command": [_node(), str(EVERYTHING), "stdio"], "timeout_s": 20.0}


@contextmanager
def serve_everything(mode: str, ready_timeout_s: float = 20.0) -> Iterator[str]:
    """Run server-everything in ``streamableHttp`` or ``sse`` mode; yield its client URL.

    Readiness is its "listening on port" / "running on port" stderr line (bounded wait).
    """
    port = free_port()
    proc = subprocess.Popen(
        [_node(), str(EVERYTHING), mode],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    drain: threading.Thread | None = None
    try:
        deadline = time.monotonic() + ready_timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stderr, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(timeout=left):
                    raise TimeoutError(f"server-everything {mode} not ready within {ready_timeout_s}s")
                line = proc.stderr.readline().decode("utf-8", "replace")
                if not line:
                    raise RuntimeError(f"server-everything {mode} exited early")
                if re.search(r"(listening|running) on port \d+", line):
                    break
        # It logs to stderr on every request: keep draining so it never blocks or hits EPIPE.
        drain = threading.Thread(target=proc.stderr.read, daemon=True)
        drain.start()
        path = "/mcp" if mode == "streamableHttp" else "/sse"
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if drain is not None:
            drain.join(timeout=5)  # returns at EOF, which the exit guarantees
        proc.stderr.close()


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    with running_gateway({"store": "sqlite:///:memory:", "upstreams": {"every": everything_stdio()}}) as url:
        yield f"{url}/servers/every/mcp"


class Observed:
    """Everything the server sent the client outside replies, with events to wait on."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.logs: list[types.LoggingMessageNotificationParams] = []
        self.sampling: list[types.CreateMessageRequestParams] = []
        self.elicitation: list[Any] = []
        self.log_arrived = anyio.Event()
        self.updated = anyio.Event()

    async def on_message(self, message: Any) -> None:
        self.messages.append(message)
        if isinstance(message, types.ResourceUpdatedNotification):
            self.updated.set()

    async def on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params)
        self.log_arrived.set()

    async def on_sampling(self, ctx: ClientRequestContext, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.sampling.append(params)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="sampled through bastion"), model="test-model"
        )

    async def on_elicitation(self, ctx: ClientRequestContext, params: Any) -> types.ElicitResult:
        self.elicitation.append(params)
        return types.ElicitResult(action="accept", content={"name": "Ada Lovelace", "check": True})


def _client(url: str, mode: str, seen: Observed) -> Client:
    return Client(
        url,
        mode=mode,
        message_handler=seen.on_message,
        logging_callback=seen.on_log,
        sampling_callback=seen.on_sampling,
        elicitation_callback=seen.on_elicitation,
    )


MODES = pytest.mark.parametrize("mode", ["auto", "legacy"])


@MODES
async def test_tools_are_listed_and_called_when_client_connects_over_stdio_upstream(gateway: str, mode: str) -> None:
    seen = Observed()
    async with _client(gateway, mode, seen) as client:
        assert client.server_info is not None and client.server_info.name == "mcp-servers/everything"
        names = {t.name for t in (await client.list_tools()).tools}
        # The conditional tools appear only because the client's sampling/elicitation
        # capabilities crossed the gateway in initialize.
        assert {"echo", "get-sum", "trigger-long-running-operation", "trigger-sampling-request",
                "trigger-elicitation-request", "gzip-file-as-resource"} <= names  # fmt: skip
        result = await client.call_tool("echo", {"message": "héllo ✓"})
        assert result.is_error is False
        assert result.content[0].text == "Echo: héllo ✓"  # type: ignore[union-attr]
        total = await client.call_tool("get-sum", {"a": 2, "b": 40})
        assert "42" in total.content[0].text  # type: ignore[union-attr]


async def test_image_content_is_byte_identical_when_tool_returns_it(gateway: str) -> None:
    expected = re.search(r'MCP_TINY_IMAGE = "([^"]+)"', TINY_IMAGE_JS.read_text())
    assert expected is not None
    async with Client(gateway) as client:
        result = await client.call_tool("get-tiny-image", {})
    images = [c for c in result.content if isinstance(c, types.ImageContent)]
    assert len(images) == 1
    assert images[0].mime_type == "image/png"
    assert images[0].data == expected.group(1)


async def test_blob_resource_is_byte_identical_when_read_through_gateway(gateway: str) -> None:
    payload = bytes(range(256)) * 4 + "ünïcødé \x00 end".encode()
    data_uri = "data:application/octet-stream;base64," + base64.b64encode(payload).decode()
    async with Client(gateway) as client:
        made = await client.call_tool("gzip-file-as-resource", {"name": "blob.gz", "data": data_uri, "outputType": "resourceLink"})
        link = made.content[0]
        assert isinstance(link, types.ResourceLink)
        read = await client.read_resource(str(link.uri))
    contents = read.contents[0]
    assert isinstance(contents, types.BlobResourceContents)
    assert contents.mime_type == "application/gzip"
    assert gzip.decompress(base64.b64decode(contents.blob)) == payload


async def test_text_resources_and_templates_are_read_when_listed(gateway: str) -> None:
    async with Client(gateway) as client:
        listed = {str(r.uri) for r in (await client.list_resources()).resources}
        assert STATIC_DOC_URI in listed
        doc = await client.read_resource(STATIC_DOC_URI)
        text = doc.contents[0]
        assert isinstance(text, types.TextResourceContents)
        on_disk = (EVERYTHING.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
        assert text.text == on_disk
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert "demo://resource/dynamic/text/{resourceId}" in templates
        dynamic = await client.read_resource("demo://resource/dynamic/text/7")
        assert dynamic.contents[0].text.startswith("Resource 7: ")  # type: ignore[union-attr]


@MODES
async def test_prompts_are_listed_and_rendered_when_client_asks(gateway: str, mode: str) -> None:
    async with Client(gateway, mode=mode) as client:
        names = {p.name for p in (await client.list_prompts()).prompts}
        assert {"simple-prompt", "args-prompt", "completable-prompt", "resource-prompt"} <= names
        prompt = await client.get_prompt("args-prompt", {"city": "Lyon", "state": "AURA"})
        assert prompt.messages[0].content.text == "What's weather in Lyon, AURA?"  # type: ignore[union-attr]
        embedded = await client.get_prompt("resource-prompt", {"resourceType": "Text", "resourceId": "3"})
        assert any(isinstance(m.content, types.EmbeddedResource) for m in embedded.messages)


@MODES
async def test_progress_notifications_arrive_when_call_carries_a_token(gateway: str, mode: str) -> None:
    progress: list[tuple[float, float | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    async with Client(gateway, mode=mode) as client:
        with anyio.fail_after(WAIT_S):
            result = await client.call_tool(
                "trigger-long-running-operation", {"duration": 0.3, "steps": 3}, progress_callback=on_progress
            )
    assert result.content[0].text.startswith("Long running operation completed")  # type: ignore[union-attr]
    assert progress == [(1.0, 3.0), (2.0, 3.0), (3.0, 3.0)]


async def test_log_notifications_reach_client_when_level_allows(gateway: str) -> None:
    seen = Observed()
    async with _client(gateway, "legacy", seen) as client:
        assert isinstance(await client.set_logging_level("debug"), types.EmptyResult)
        await client.subscribe_resource(STATIC_DOC_URI)  # the server logs every subscribe at "info"
        with anyio.fail_after(WAIT_S):
            await seen.log_arrived.wait()
        await client.unsubscribe_resource(STATIC_DOC_URI)
    assert seen.logs[0].level == "info"
    assert seen.logs[0].data == f"Received Subscribe Resource request for URI: {STATIC_DOC_URI} "


async def test_sampling_request_is_answered_by_client_when_tool_asks_for_it(gateway: str) -> None:
    seen = Observed()
    async with _client(gateway, "legacy", seen) as client:
        with anyio.fail_after(WAIT_S):
            result = await client.call_tool("trigger-sampling-request", {"prompt": "haiku", "maxTokens": 7})
    assert len(seen.sampling) == 1
    assert seen.sampling[0].max_tokens == 7
    assert seen.sampling[0].messages[0].content.text == "Resource trigger-sampling-request context: haiku"  # type: ignore[union-attr]
    sampled = json.loads(result.content[0].text.split("\n", 1)[1])  # type: ignore[union-attr]
    assert sampled == {"model": "test-model", "role": "assistant", "content": {"type": "text", "text": "sampled through bastion"}}


async def test_elicitation_request_is_answered_by_client_when_tool_asks_for_it(gateway: str) -> None:
    seen = Observed()
    async with _client(gateway, "legacy", seen) as client:
        with anyio.fail_after(WAIT_S):
            result = await client.call_tool("trigger-elicitation-request", {})
    assert len(seen.elicitation) == 1
    schema = seen.elicitation[0].requested_schema
    assert schema["required"] == ["name"]
    assert schema["properties"]["legacyTitledEnum"]["enumNames"][0] == "Cats"  # passed through verbatim
    texts = [c.text for c in result.content if isinstance(c, types.TextContent)]
    assert texts[0] == "✅ User provided the requested information!"
    assert "- Name: Ada Lovelace" in texts[1]


async def test_resource_updates_flow_when_subscribed_and_stop_after_unsubscribe(gateway: str) -> None:
    seen = Observed()
    async with _client(gateway, "legacy", seen) as client:
        assert isinstance(await client.subscribe_resource(STATIC_DOC_URI), types.EmptyResult)
        await client.call_tool("toggle-subscriber-updates", {})  # sends one update at once, then every 5 s
        with anyio.fail_after(WAIT_S):
            await seen.updated.wait()
        updates = [m for m in seen.messages if isinstance(m, types.ResourceUpdatedNotification)]
        assert str(updates[0].params.uri) == STATIC_DOC_URI
        assert isinstance(await client.unsubscribe_resource(STATIC_DOC_URI), types.EmptyResult)
        await client.call_tool("toggle-subscriber-updates", {})


async def test_completion_is_answered_when_prompt_argument_is_completed(gateway: str) -> None:
    async with Client(gateway) as client:
        first = await client.complete(
            types.PromptReference(type="ref/prompt", name="completable-prompt"), {"name": "department", "value": "S"}
        )
        assert first.completion.values == ["Sales", "Support"]
        second = await client.complete(
            types.PromptReference(type="ref/prompt", name="completable-prompt"),
            {"name": "name", "value": ""},
            context_arguments={"department": "Engineering"},
        )
        assert second.completion.values == ["Alice", "Bob", "Charlie"]


async def test_ping_is_answered_when_client_pings(gateway: str) -> None:
    async with Client(gateway, mode="legacy") as client:
        with anyio.fail_after(WAIT_S):
            assert isinstance(await client.send_ping(), types.EmptyResult)


async def _tap_lines(listener: anyio.abc.SocketListener, sink: anyio.abc.ObjectSendStream[dict[str, Any]]) -> None:
    async def handle(stream: anyio.abc.SocketStream) -> None:
        buffer = b""
        async with stream:
            async for chunk in stream:
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    await sink.send(json.loads(line))

    await listener.serve(handle)


async def _until(lines: AsyncIterator[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    seen = []
    async for message in lines:
        seen.append(message)
        if message.get("method") == method:
            return seen
    raise AssertionError(f"tap closed before {method}")


async def test_cancellation_reaches_upstream_when_client_abandons_a_call() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    sink, lines = anyio.create_memory_object_stream[dict[str, Any]](100)
    tapped = {"command": [PYTHON, "-c", TAP, str(port), *everything_stdio()["command"]], "timeout_s": 20.0}
    async with listener, sink, lines, anyio.create_task_group() as tg:
        tg.start_soon(_tap_lines, listener, sink)
        with running_gateway({"store": "sqlite:///:memory:", "upstreams": {"every": tapped}}) as base:
            async with Client(f"{base}/servers/every/mcp") as client:
                started = anyio.Event()

                async def on_progress(value: float, total: float | None, message: str | None) -> None:
                    started.set()

                async def long_call() -> None:
                    await client.call_tool(
                        "trigger-long-running-operation", {"duration": 60, "steps": 120}, progress_callback=on_progress
                    )

                with anyio.fail_after(WAIT_S):
                    async with anyio.create_task_group() as calls:
                        calls.start_soon(long_call)
                        await started.wait()  # the upstream is demonstrably working on it
                        calls.cancel_scope.cancel()
                    upstream_saw = await _until(lines, "notifications/cancelled")
                call = next(m for m in upstream_saw if m.get("method") == "tools/call")
                assert upstream_saw[-1]["params"]["requestId"] == call["id"]
                # The session and the upstream keep working after the cancellation.
                again = await client.call_tool("echo", {"message": "still here"})
                assert again.content[0].text == "Echo: still here"  # type: ignore[union-attr]
        tg.cancel_scope.cancel()


@pytest.mark.parametrize(("mode", "transport"), [("streamableHttp", "streamable-http"), ("sse", "sse")])
async def test_list_call_and_progress_work_when_upstream_is_remote(mode: str, transport: str) -> None:
    with serve_everything(mode) as upstream_url:
        upstream = {"url": upstream_url, "transport": transport, "timeout_s": 20.0}
        with running_gateway({"store": "sqlite:///:memory:", "upstreams": {"every": upstream}}) as base:
            progress: list[float] = []

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append(value)

            async with Client(f"{base}/servers/every/mcp") as client:
                assert client.server_info is not None and client.server_info.name == "mcp-servers/everything"
                names = {t.name for t in (await client.list_tools()).tools}
                assert {"echo", "trigger-long-running-operation"} <= names
                echoed = await client.call_tool("echo", {"message": transport})
                assert echoed.content[0].text == f"Echo: {transport}"  # type: ignore[union-attr]
                with anyio.fail_after(WAIT_S):
                    done = await client.call_tool(
                        "trigger-long-running-operation", {"duration": 0.3, "steps": 3}, progress_callback=on_progress
                    )
                assert done.content[0].text.startswith("Long running operation completed")  # type: ignore[union-attr]
                assert progress == [1.0, 2.0, 3.0]
