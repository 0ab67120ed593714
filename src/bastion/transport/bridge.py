"""The stdio ↔ Streamable HTTP bridge behind ``bastion connect``: a desktop client that can
only launch stdio servers launches this, and every message travels on to the gateway's URL.

It reuses the upstream Streamable HTTP transport (the gateway is, to the bridge, an upstream).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import aiohttp

from bastion.errors import ProtocolError, UpstreamError
from bastion.jsonrpc import codes
from bastion.jsonrpc.envelope import Message, RequestId, dumps, parse_message, render_error
from bastion.upstream.streamable_http import StreamableHttpTransport


class _StdoutListener:
    def __init__(self, transport: StreamableHttpTransport, out: Any, initialize_ids: set[RequestId]) -> None:
        self._transport = transport
        self._out = out
        self._initialize_ids = initialize_ids

    def write(self, message: Message) -> None:
        self._out.write(dumps(message) + b"\n")
        self._out.flush()

    async def on_message(self, message: Message, related_id: RequestId | None) -> None:
        if "method" not in message and message.get("id") in self._initialize_ids and "result" in message:
            self._initialize_ids.discard(message["id"])
            self._transport.start_listening(message["result"].get("protocolVersion"))
        self.write(message)

    def on_invalid(self, description: str, related_id: RequestId | None) -> None:
        if related_id is not None:
            self.on_request_failed(related_id, description)

    def on_request_failed(self, request_id: RequestId, reason: str) -> None:
        self.write(render_error(request_id, codes.UPSTREAM_UNAVAILABLE, "Gateway unavailable", {"reason": reason}))

    def on_closed(self, reason: str) -> None:
        print(f"bastion connect: {reason}", file=sys.stderr)


async def run_bridge(url: str, headers: dict[str, str], stdin: asyncio.StreamReader, out: Any, timeout_s: float = 300.0) -> None:
    """Relay until stdin closes; then end the HTTP session."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        transport = StreamableHttpTransport("gateway", url, headers, client)
        initialize_ids: set[RequestId] = set()
        listener = _StdoutListener(transport, out, initialize_ids)
        await transport.open(listener)
        try:
            while line := await stdin.readline():
                if not line.strip():
                    continue
                try:
                    message = parse_message(line)
                except ProtocolError as exc:
                    listener.write(render_error(None, exc.code, exc.public_message))
                    continue
                if message.get("method") == "initialize" and "id" in message:
                    initialize_ids.add(message["id"])
                try:
                    await transport.send(message)
                except UpstreamError as exc:
                    if "id" in message and "method" in message:
                        listener.on_request_failed(message["id"], str(exc))
            await asyncio.sleep(0)  # let in-flight POSTs deliver what already arrived
        finally:
            await transport.close()


async def _stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def main(url: str, headers: dict[str, str]) -> None:
    await run_bridge(url, headers, await _stdin_reader(), sys.stdout.buffer)
