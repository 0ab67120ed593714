"""A deliberately fast MCP server for the benchmark, so the upstream is never the bottleneck.

Two tools: ``small`` (a ~200 B JSON-RPC reply) and ``large`` (a ~64 KB reply). Replies are
pre-rendered bytes with only the request id spliced in; JSON parsing is one ``orjson.loads``.

Transports:
  * ``--http PORT`` — MCP Streamable HTTP in JSON-response mode (2025-11-25): POST ``/mcp``,
    ``initialize`` returns an ``mcp-session-id``, notifications get 202, GET gets 405 (no
    server-initiated stream), DELETE 200. ``--server raw`` (default) is a hand-written asyncio
    HTTP/1.1 keep-alive server; ``--server uvicorn`` serves the same logic as plain ASGI on
    uvicorn (slower: h11 parsing dominates; kept for comparison — see docs/benchmarks.md).
  * ``--stdio`` — newline-delimited JSON-RPC on stdin/stdout (the MCP stdio transport).

Run: ``.venv/bin/python bench/upstream.py --http 18001`` or ``.venv/bin/python bench/upstream.py --stdio``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from typing import Any

import orjson

PROTOCOL_VERSION = "2025-11-25"
SMALL_TEXT = "s" * 120  # → ~200 B JSON-RPC reply on the wire
LARGE_TEXT = ("The quick brown fox jumps over the lazy dog. " * 1457)[:65536]  # 64 KiB of text

TOOLS = [
    {
        "name": "small",
        "description": "Returns about 200 bytes.",
        "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": "large",
        "description": "Returns about 64 KB.",
        "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "annotations": {"readOnlyHint": True},
    },
]


def _split(result: dict[str, Any]) -> tuple[bytes, bytes]:
    """Pre-render ``{"jsonrpc":"2.0","id":<ID>,"result":...}`` as (prefix, suffix) around the id."""
    marker = "__ID__"
    rendered = orjson.dumps({"jsonrpc": "2.0", "id": marker, "result": result})
    prefix, suffix = rendered.split(b'"' + marker.encode() + b'"')
    return prefix, suffix


_REPLIES: dict[str, tuple[bytes, bytes]] = {
    "small": _split({"content": [{"type": "text", "text": SMALL_TEXT}], "isError": False}),
    "large": _split({"content": [{"type": "text", "text": LARGE_TEXT}], "isError": False}),
    "tools/list": _split({"tools": TOOLS}),
    "ping": _split({}),
    "initialize": _split(
        {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "bench-upstream", "version": "1.0"},
        }
    ),
}


def handle(body: bytes) -> tuple[bytes | None, bool]:
    """One JSON-RPC message → (reply bytes or None for a notification, is_initialize)."""
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError:
        return b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}', False
    if not isinstance(msg, dict) or "method" not in msg:
        return None, False  # a client reply or junk: nothing to answer
    if "id" not in msg:
        return None, False  # notification
    method = msg["method"]
    rid = orjson.dumps(msg["id"])
    if method == "tools/call":
        name = (msg.get("params") or {}).get("name")
        parts = _REPLIES.get(name) if name in ("small", "large") else None
        if parts is None:
            err = {"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32602, "message": f"Unknown tool: {name}"}}
            return orjson.dumps(err), False
        return parts[0] + rid + parts[1], False
    parts = _REPLIES.get(method)
    if parts is None:
        if method.endswith("/list"):
            key = method.split("/")[0]
            return orjson.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {key: []}}), False
        err = {"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": f"Method not found: {method}"}}
        return orjson.dumps(err), False
    return parts[0] + rid + parts[1], method == "initialize"


_JWKS: bytes | None = None  # served at GET /jwks* when --jwks FILE is given (the bench's JWT issuer)


# -- raw asyncio HTTP/1.1 server -------------------------------------------------------------


class _HttpProtocol(asyncio.Protocol):
    """Keep-alive HTTP/1.1 with Content-Length bodies only (all MCP clients send those)."""

    __slots__ = ("buf", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # typeshed types the argument BaseTransport; a stream server always passes a Transport.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            lower = head.lower()
            i = lower.find(b"\r\ncontent-length:")
            if i >= 0:
                j = lower.find(b"\r\n", i + 2)
                length = int(lower[i + 17 : j if j >= 0 else len(lower)])
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self._request(head, body)

    def _request(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        method = head[: head.find(b" ")]
        if method == b"POST":
            reply, is_init = handle(body)
            if reply is None:
                self.transport.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                return
            extra = b"mcp-session-id: " + uuid.uuid4().hex.encode() + b"\r\n" if is_init else b""
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + extra
                + b"content-length: "
                + str(len(reply)).encode()
                + b"\r\n\r\n"
                + reply
            )
        elif method == b"DELETE":
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        elif method == b"GET" and _JWKS is not None and head.startswith(b"GET /jwks"):
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(_JWKS)).encode() + b"\r\n\r\n" + _JWKS
            )
        else:
            self.transport.write(b"HTTP/1.1 405 Method Not Allowed\r\nallow: POST, DELETE\r\ncontent-length: 0\r\n\r\n")


async def serve_raw(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_HttpProtocol, host, port, backlog=4096, reuse_address=True)
    print(f"bench upstream (raw) listening on http://{host}:{port}/mcp", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


# -- the same as plain ASGI (for uvicorn) ------------------------------------------------------


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    method = scope["method"]
    if method == "POST":
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        reply, is_init = handle(b"".join(chunks))
        if reply is None:
            await send({"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(reply)).encode())]
        if is_init:
            headers.append((b"mcp-session-id", uuid.uuid4().hex.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply})
        return
    status = 200 if method == "DELETE" else 405
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


# -- stdio -------------------------------------------------------------------------------------


def serve_stdio() -> None:
    """Blocking line loop: the cheapest possible stdio server (replies in request order)."""
    stdin = sys.stdin.buffer
    out = os.fdopen(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False)
    while True:
        line = stdin.readline()
        if not line:
            return
        line = line.strip()
        if not line:
            continue
        reply, _ = handle(line)
        if reply is not None:
            out.write(reply + b"\n")
            out.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--http", type=int, metavar="PORT")
    mode.add_argument("--stdio", action="store_true")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--server", choices=["raw", "uvicorn"], default="raw")
    parser.add_argument("--jwks", help="also serve this JWKS file at GET /jwks (raw server only)")
    args = parser.parse_args()
    if args.jwks:
        global _JWKS
        with open(args.jwks, "rb") as f:
            _JWKS = f.read()
    if args.stdio:
        serve_stdio()
    elif args.server == "uvicorn":
        import uvicorn

        uvicorn.run(asgi_app, host=args.host, port=args.http, log_level="warning", access_log=False, backlog=4096)
    else:
        asyncio.run(serve_raw(args.host, args.http))


if __name__ == "__main__":
    main()
