"""Streamable HTTP upstream (MCP 2025-03-26 and later): POST each message, read JSON or SSE back.

Each request's POST runs in its own task so replies stream in concurrently; messages on a
POST's SSE stream are reported as related to that request. After initialize the session id is
kept, a GET stream listens for unrelated server messages, and a dropped POST stream is resumed
with ``Last-Event-ID`` when the server gave event ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp

from bastion.errors import ProtocolError, UpstreamError
from bastion.jsonrpc.envelope import Message, MessageKind, RequestId, classify, dumps, parse_body
from bastion.transport.sse import parse_events
from bastion.upstream.base import TransportListener
from bastion.upstream.lines import HTTP_ERRORS, response_lines

log = logging.getLogger("bastion.upstream.http")

_ACCEPT = "application/json, text/event-stream"
_MAX_RESUME_ATTEMPTS = 3


_LISTEN_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=None)


class StreamableHttpTransport:
    """One MCP session with an HTTP upstream, over a shared pooled ``aiohttp.ClientSession``.

    aiohttp rather than httpx on this path: it is the hot path of every proxied call, and
    httpx's pool costs about 2 ms of CPU per request here against a fraction of that for aiohttp
    (measured with bench/, see docs/benchmarks.md).
    """

    def __init__(self, name: str, url: str, headers: dict[str, str], client: aiohttp.ClientSession) -> None:
        self.name = name
        self._url = url
        self._headers = {**headers, "accept": _ACCEPT, "content-type": "application/json"}
        self._client = client
        self._listener: TransportListener | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._replied: set[RequestId] = set()
        self._closed = False

    async def open(self, listener: TransportListener) -> None:
        self._listener = listener

    def _request_headers(self) -> dict[str, str]:
        headers = dict(self._headers)
        if self.session_id is not None:
            headers["mcp-session-id"] = self.session_id
        if self.protocol_version is not None:
            headers["mcp-protocol-version"] = self.protocol_version
        return headers

    async def send(self, message: Message) -> None:
        if self._closed:
            raise UpstreamError(f"upstream {self.name!r} session is closed")
        if classify(message) is MessageKind.REQUEST:
            self._spawn(self._post_request(message), f"post-{message['id']}")
            return
        await self._post_one_way(message)

    def _spawn(self, coro: Any, label: str) -> None:
        task = asyncio.create_task(coro, name=f"http-{self.name}-{label}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_one_way(self, message: Message) -> None:
        try:
            async with self._client.post(self._url, data=dumps(message), headers=self._request_headers()) as response:
                status = response.status
                await response.read()
        except HTTP_ERRORS as exc:
            raise UpstreamError(f"upstream {self.name!r} unreachable: {type(exc).__name__}") from exc
        if status >= 400:
            raise UpstreamError(f"upstream {self.name!r} refused a message with HTTP {status}")

    async def _post_request(self, message: Message) -> None:
        assert self._listener is not None
        request_id: RequestId = message["id"]
        try:
            async with self._client.post(self._url, data=dumps(message), headers=self._request_headers()) as response:
                if message.get("method") == "initialize":
                    self.session_id = response.headers.get("mcp-session-id", self.session_id)
                if response.status == 404 and self.session_id is not None:
                    self._fail(request_id, "upstream session expired (HTTP 404)")
                    self._listener.on_closed("upstream session expired")
                    return
                content_type = response.headers.get("content-type", "")
                if response.status >= 400 and "json" not in content_type:
                    self._fail(request_id, f"upstream answered HTTP {response.status}")
                    return
                if content_type.startswith("text/event-stream"):
                    last_id = await self._read_stream(response, request_id)
                    if last_id is not None and not self._answered(request_id):
                        await self._resume(request_id, last_id)
                else:
                    await self._deliver_body(await response.read(), request_id)
        except HTTP_ERRORS as exc:
            self._fail(request_id, f"upstream unreachable: {type(exc).__name__}")
        finally:
            self._replied.discard(request_id)

    def start_listening(self, protocol_version: str | None) -> None:
        """After the handshake: remember the version and open the GET stream for unrelated messages."""
        self.protocol_version = protocol_version
        if self.session_id is not None:
            self._spawn(self._listen(), "get")

    async def _listen(self) -> None:
        try:
            async with self._client.get(
                self._url, headers={**self._request_headers(), "accept": "text/event-stream"}, timeout=_LISTEN_TIMEOUT
            ) as response:
                if response.status != 200:
                    return  # 405: the server offers no GET stream; that is allowed.
                await self._read_stream(response, None)
        except HTTP_ERRORS as exc:
            log.info("upstream GET stream ended", extra={"upstream": self.name, "error": type(exc).__name__})

    async def _read_stream(self, response: aiohttp.ClientResponse, request_id: RequestId | None) -> str | None:
        """Deliver every event; return the last event id if the stream ended before the reply."""
        assert self._listener is not None
        last_id: str | None = None
        try:
            async for event in parse_events(response_lines(response)):
                if event.id:
                    last_id = event.id
                if event.event != "message" or not event.data:
                    continue
                await self._deliver_body(event.data.encode(), request_id)
        except HTTP_ERRORS:
            if last_id is None and request_id is not None:
                self._fail(request_id, "upstream stream broke")
            return last_id
        if request_id is not None and not self._answered(request_id) and last_id is None:
            self._fail(request_id, "upstream closed the stream without a reply")
        return last_id

    async def _resume(self, request_id: RequestId, last_id: str) -> None:
        for _ in range(_MAX_RESUME_ATTEMPTS):
            try:
                async with self._client.get(
                    self._url,
                    headers={**self._request_headers(), "accept": "text/event-stream", "last-event-id": last_id},
                    timeout=_LISTEN_TIMEOUT,
                ) as response:
                    if response.status != 200:
                        break
                    new_last = await self._read_stream(response, request_id)
                    if self._answered(request_id):
                        return
                    last_id = new_last or last_id
            except HTTP_ERRORS:
                continue
        if not self._answered(request_id):
            self._fail(request_id, "upstream stream broke and could not be resumed")

    async def _deliver_body(self, body: bytes, request_id: RequestId | None) -> None:
        assert self._listener is not None
        try:
            parsed = parse_body(body)
        except ProtocolError:
            self._listener.on_invalid("upstream sent invalid JSON-RPC", request_id)
            return
        for message in parsed if isinstance(parsed, list) else [parsed]:
            if request_id is not None and message.get("id") == request_id and "method" not in message:
                self._replied.add(request_id)
            await self._listener.on_message(message, request_id)

    def _answered(self, request_id: RequestId) -> bool:
        return request_id in self._replied

    def _fail(self, request_id: RequestId, reason: str) -> None:
        assert self._listener is not None
        log.warning("upstream request failed", extra={"upstream": self.name, "reason": reason})
        self._replied.add(request_id)
        self._listener.on_request_failed(request_id, reason)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.session_id is not None and not self._client.closed:
            with contextlib.suppress(*HTTP_ERRORS):
                async with self._client.delete(
                    self._url, headers=self._request_headers(), timeout=aiohttp.ClientTimeout(total=2.0)
                ):
                    pass

