"""UpstreamLink: one MCP session with one upstream, over a transport it can rebuild.

It owns the upstream-side request ids (so Bastion's own requests never collide with a
client's), waits for replies with a deadline, propagates cancellation, replays the client's
``initialize`` after a crashed stdio child is restarted (with backoff), and hands every
server-initiated message to the session above it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bastion.errors import UpstreamError
from bastion.exchange import Reply
from bastion.jsonrpc import codes
from bastion.jsonrpc.envelope import Message, RequestId
from bastion.upstream.base import UpstreamTransport

log = logging.getLogger("bastion.upstream")

_MAX_BACKOFF_S = 30.0

ServerMessageHandler = Callable[["UpstreamLink", Message, Any], Awaitable[None]]
"""Receives (link, server-initiated message, context of the related request or None)."""


class _NotDelivered(Exception):
    """The transport refused the message: it certainly did not reach the upstream."""


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Reply]
    context: Any


class UpstreamLink:
    """A resilient MCP session with one upstream server."""

    def __init__(
        self,
        name: str,
        make_transport: Callable[[], UpstreamTransport],
        on_server_message: ServerMessageHandler,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        restart_backoff_s: float,
    ) -> None:
        self.name = name
        self._make_transport = make_transport
        self._on_server_message = on_server_message
        self.timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._base_backoff_s = restart_backoff_s
        self._backoff_s = restart_backoff_s
        self._transport: UpstreamTransport | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._init_params: dict[str, Any] | None = None
        self.init_result: dict[str, Any] | None = None
        self._down_since: float | None = None
        self._start_lock = asyncio.Lock()
        self._closed = False
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self.restarts = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def initialize(self, params: dict[str, Any]) -> Reply:
        """Open the transport and run the MCP handshake with the client's own parameters."""
        self._init_params = params
        async with self._start_lock:
            return await self._start()

    async def _start(self) -> Reply:
        assert self._init_params is not None
        if self._transport is not None:
            await self._transport.close()
        transport = self._make_transport()
        self._transport = transport
        await transport.open(_Listener(self, transport))
        try:
            reply = await self._request_on(transport, "initialize", self._init_params, None, self._connect_timeout_s)
        except _NotDelivered as exc:
            raise UpstreamError(f"upstream {self.name!r} did not accept initialize") from exc.__cause__
        if "result" in reply:
            self.init_result = reply["result"]
            await transport.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            start_listening = getattr(transport, "start_listening", None)
            if start_listening is not None:
                start_listening(self.init_result.get("protocolVersion"))
            self._down_since = None
        return reply

    async def _ensure_running(self) -> UpstreamTransport:
        if self._closed:
            raise UpstreamError(f"upstream {self.name!r} session is closed")
        if self._transport is not None and self._down_since is None:
            return self._transport
        if self._init_params is None:
            raise UpstreamError(f"upstream {self.name!r} is not initialized")
        async with self._start_lock:
            if self._transport is not None and self._down_since is None:
                return self._transport
            wait_s = (self._down_since or 0.0) + self._backoff_s - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)  # restart backoff, bounded by _MAX_BACKOFF_S
            self._backoff_s = min(self._backoff_s * 2, _MAX_BACKOFF_S)
            self.restarts += 1
            log.warning("restarting upstream session", extra={"upstream": self.name, "restarts": self.restarts})
            reply = await self._start()
            if "error" in reply:
                raise UpstreamError(f"upstream {self.name!r} refused to re-initialize")
            assert self._transport is not None
            return self._transport

    async def close(self) -> None:
        self._closed = True
        self._fail_all("upstream session closed")
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    # -- calls -----------------------------------------------------------------------------

    async def request(self, method: str, params: dict[str, Any] | None, context: Any = None, timeout_s: float | None = None) -> Reply:
        """Send a request and wait for its reply (result or the upstream's own error, unchanged).

        Raises:
            UpstreamError: unreachable, crashed, garbage, or no reply within the timeout.
        """
        transport = await self._ensure_running()
        try:
            reply = await self._request_on(transport, method, params, context, timeout_s or self.timeout_s)
        except _NotDelivered:
            # The child died between two calls and nobody has noticed yet: the request never
            # left, so restarting and sending it once more cannot execute it twice.
            self._on_closed(transport, "upstream input closed")
            transport = await self._ensure_running()
            reply = await self._request_on(transport, method, params, context, timeout_s or self.timeout_s)
        self._backoff_s = self._base_backoff_s
        return reply

    async def _request_on(
        self, transport: UpstreamTransport, method: str, params: dict[str, Any] | None, context: Any, timeout_s: float
    ) -> Reply:
        upstream_id = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[upstream_id] = _Pending(future, context)
        message: Message = {"jsonrpc": "2.0", "id": upstream_id, "method": method}
        if params is not None:
            message["params"] = params
        try:
            try:
                await transport.send(message)
            except UpstreamError as exc:
                raise _NotDelivered from exc
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            await self._send_cancel(transport, upstream_id, "timed out in gateway")
            raise UpstreamError(
                f"upstream {self.name!r} did not answer {method} within {timeout_s:g} s", code=codes.UPSTREAM_TIMEOUT
            ) from None
        except asyncio.CancelledError:
            await asyncio.shield(self._send_cancel(transport, upstream_id, "cancelled by client"))
            raise
        finally:
            self._pending.pop(upstream_id, None)

    async def _send_cancel(self, transport: UpstreamTransport, upstream_id: int, reason: str) -> None:
        with contextlib.suppress(UpstreamError):
            await transport.send(
                {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": upstream_id, "reason": reason}}
            )

    async def notify(self, method: str, params: dict[str, Any] | None) -> None:
        """Send a notification to the upstream."""
        transport = await self._ensure_running()
        message: Message = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await transport.send(message)

    async def respond(self, upstream_request_id: RequestId, reply: Reply) -> None:
        """Answer a request the upstream sent (sampling, elicitation, roots, ping)."""
        if self._transport is None or self._down_since is not None:
            return  # the upstream that asked is gone; its restarted self never asked
        await self._transport.send({"jsonrpc": "2.0", "id": upstream_request_id, **reply})

    # -- what the transport reports ---------------------------------------------------------

    async def _on_message(self, message: Message, related_id: RequestId | None) -> None:
        if "method" not in message:
            pending = self._pending.get(message["id"]) if isinstance(message.get("id"), int) else None
            if pending is None:
                log.info("reply to an unknown or finished request", extra={"upstream": self.name, "id": message.get("id")})
            elif not pending.future.done():
                pending.future.set_result({k: v for k, v in message.items() if k in ("result", "error")})
            return
        related = self._pending.get(related_id) if isinstance(related_id, int) else None
        await self._on_server_message(self, message, related.context if related else None)

    def _fail(self, upstream_id: int, reason: str) -> None:
        pending = self._pending.get(upstream_id)
        if pending is not None and not pending.future.done():
            pending.future.set_exception(UpstreamError(f"upstream {self.name!r}: {reason}", data={"reason": reason}))

    def _fail_all(self, reason: str) -> None:
        for upstream_id in list(self._pending):
            self._fail(upstream_id, reason)

    def _discard(self, transport: UpstreamTransport, reason: str) -> None:
        self._on_closed(transport, reason)
        task = asyncio.create_task(transport.close(), name=f"discard-{self.name}")
        self._closing_tasks.add(task)
        task.add_done_callback(self._closing_tasks.discard)

    def _on_closed(self, transport: UpstreamTransport, reason: str) -> None:
        if transport is not self._transport:
            return
        log.warning("upstream session lost", extra={"upstream": self.name, "reason": reason})
        self._down_since = time.monotonic()
        self._fail_all(reason)


class _Listener:
    """Adapts transport callbacks to one link, ignoring transports the link has replaced."""

    def __init__(self, link: UpstreamLink, transport: UpstreamTransport) -> None:
        self._link = link
        self._transport = transport

    async def on_message(self, message: Message, related_id: RequestId | None) -> None:
        await self._link._on_message(message, related_id)

    def on_invalid(self, description: str, related_id: RequestId | None) -> None:
        if isinstance(related_id, int):
            self._link._fail(related_id, description)
        else:
            # Garbage on a framed stream: nothing after it can be trusted to belong where it
            # seems to, so the session is dropped and re-established on the next call.
            self._link._discard(self._transport, description)

    def on_request_failed(self, request_id: RequestId, reason: str) -> None:
        if isinstance(request_id, int):
            self._link._fail(request_id, reason)

    def on_closed(self, reason: str) -> None:
        self._link._on_closed(self._transport, reason)
