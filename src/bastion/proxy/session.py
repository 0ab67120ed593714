"""One client's MCP session: its reply streams, its in-flight requests, its upstream links, and
the routing of every server-initiated message back to the right stream.

Which upstream a request goes to, and under which name, is the endpoint's business
(proxy/endpoint.py); this module only moves messages and remembers who is waiting for what.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bastion.errors import UpstreamError
from bastion.exchange import CallerContext, Direction, Exchange, Kind, Reply
from bastion.jsonrpc import codes
from bastion.jsonrpc.envelope import Message, RequestId, render_reply
from bastion.pipeline.runner import error_reply
from bastion.proxy.streams import ReplyStream
from bastion.upstream.link import UpstreamLink

if TYPE_CHECKING:
    from bastion.proxy.endpoint import Endpoint
    from bastion.proxy.gateway import Gateway

log = logging.getLogger("bastion.session")

_BACKLOG_LIMIT = 1000
_LIST_CHANGED = {"notifications/tools/list_changed": "tool", "notifications/prompts/list_changed": "prompt"}
_KEPT_STREAMS = 64
"""Finished streams whose client went away are kept this many at most, for Last-Event-ID replay."""
_CLIENT_REPLY_TIMEOUT_S = 600.0


@dataclass(slots=True)
class Inflight:
    """A client request being worked on."""

    task: asyncio.Task[None]
    stream: ReplyStream
    progress_token: Any
    traceparent: str | None


class DownstreamSession:
    """State of one ``Mcp-Session-Id``."""

    def __init__(self, session_id: str, caller: CallerContext, endpoint: Endpoint, gateway: Gateway) -> None:
        self.id = session_id
        self.caller = caller
        self.endpoint = endpoint
        self.gateway = gateway
        self.links: dict[str, UpstreamLink] = {}
        self.streams: dict[str, ReplyStream] = {}
        self._inflight: dict[RequestId, Inflight] = {}
        self._by_token: dict[Any, Inflight] = {}
        self._client_requests: dict[int, asyncio.Future[Reply]] = {}
        self._relays: dict[tuple[str, RequestId], tuple[int, asyncio.Task[None]]] = {}
        self._client_ids = itertools.count(1)
        self._stream_ids = itertools.count(1)
        self._backlog: deque[Message] = deque(maxlen=_BACKLOG_LIMIT)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.last_used = time.monotonic()
        self.closing = False
        """A close is recording this session's end; a second close leaves it to that one."""
        self.closed = False

    # -- streams -----------------------------------------------------------------------------

    def open_stream(self, owed: list[RequestId]) -> ReplyStream:
        stream = ReplyStream(f"{self.id[:8]}{next(self._stream_ids)}", owed, self.gateway.settings.http.replay_events)
        if len(self.streams) >= _KEPT_STREAMS:
            for stale in [s for s in self.streams.values() if s.finished and not s.attached][: len(self.streams) // 2]:
                del self.streams[stale.stream_id]
        self.streams[stream.stream_id] = stream
        if stream.is_get:
            while self._backlog:
                stream.push(self._backlog.popleft())
        return stream

    def release_stream(self, stream: ReplyStream) -> None:
        """Forget a stream once it is finished or its GET connection is gone."""
        stream.attached = False
        if stream.is_get or stream.finished:
            stream.closed = True
            self.streams.pop(stream.stream_id, None)

    def _live_get_stream(self) -> ReplyStream | None:
        for stream in reversed(self.streams.values()):
            if stream.is_get and stream.attached:
                return stream
        return None

    def send_to_client(self, message: Message, related: Inflight | None = None) -> None:
        """Route a server-initiated message: its request's stream, else the GET stream, else any
        open request stream, else a bounded backlog for the next GET."""
        if related is None and message.get("method") == "notifications/progress":
            related = self._by_token.get((message.get("params") or {}).get("progressToken"))
        if related is not None and not related.stream.closed:
            related.stream.push(message)
            return
        stream = self._live_get_stream()
        if stream is None:
            open_posts = [i.stream for i in self._inflight.values() if not i.stream.closed]
            stream = open_posts[-1] if open_posts else None
        if stream is None:
            if len(self._backlog) == self._backlog.maxlen:
                log.warning("session backlog full; dropping the oldest server message", extra={"session": self.id})
            self._backlog.append(message)
            return
        stream.push(message)

    # -- client → upstream -------------------------------------------------------------------

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def start_request(self, message: Message, stream: ReplyStream, traceparent: str | None = None) -> None:
        """Run one client request in its own task; its reply lands on ``stream``."""
        request_id: RequestId = message["id"]
        if request_id in self._inflight:
            # JSON-RPC ids must be unique among a peer's outstanding requests; a reused one would
            # make the two replies indistinguishable, so the second request is refused.
            refusal: Reply = {"error": {"code": codes.INVALID_REQUEST, "message": "Invalid Request: id already in use"}}
            self.spawn(self._refuse(message, stream, refusal))
            return
        meta = (message.get("params") or {}).get("_meta") or {}
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        task = self.spawn(self._run_request(message, stream))
        entry = Inflight(task, stream, token, traceparent)
        self._inflight[request_id] = entry
        if token is not None:
            self._by_token[token] = entry

    async def _run_request(self, message: Message, stream: ReplyStream) -> None:
        request_id: RequestId = message["id"]
        try:
            reply = await self.endpoint.handle_request(self, message)
        except Exception as exc:
            # Refused before reaching an upstream (unknown federated name, no live upstream).
            reply = await self._recorded_refusal(message, error_reply(exc))
        except asyncio.CancelledError:
            stream.settle(request_id)  # MCP: no response to a cancelled request
            raise
        finally:
            entry = self._inflight.pop(request_id, None)
            if entry is not None and entry.progress_token is not None:
                self._by_token.pop(entry.progress_token, None)
        stream.push(render_reply(request_id, reply))

    async def _refuse(self, message: Message, stream: ReplyStream, refusal: Reply) -> None:
        stream.push(render_reply(message["id"], await self._recorded_refusal(message, refusal)))

    async def _recorded_refusal(self, message: Message, refusal: Reply) -> Reply:
        """A request refused by the gateway itself is still recorded; if it cannot be, the answer
        is the audit failure instead (never no answer)."""
        try:
            await self.gateway.record_unrouted(self.caller, message, refusal)
        except Exception as record_exc:
            return error_reply(record_exc)
        return refusal

    def inflight_for(self, request_id: RequestId) -> Inflight | None:
        return self._inflight.get(request_id)

    def cancel_request(self, request_id: RequestId) -> bool:
        """The client sent notifications/cancelled: stop working on it (the link tells the upstream)."""
        entry = self._inflight.get(request_id)
        if entry is None:
            return False
        entry.task.cancel()
        return True

    def exchange(
        self,
        method: str,
        params: dict[str, Any] | None,
        request_id: RequestId | None,
        upstream: str,
        deliver: Callable[[Exchange], Any],
        *,
        direction: Direction = Direction.TO_UPSTREAM,
        name: str | None = None,
    ) -> Exchange:
        kind = Kind.REQUEST if request_id is not None else Kind.NOTIFICATION
        return Exchange(direction, kind, method, params, request_id, self.caller, upstream, deliver, name=name)

    # -- upstream → client -------------------------------------------------------------------

    async def on_server_message(self, link: UpstreamLink, message: Message, context: Any) -> None:
        """A link received a request or notification from its server."""
        related = context if isinstance(context, Inflight) else None
        if "id" in message:
            client_id = next(self._client_ids)
            task = self.spawn(self._relay_server_request(link, message, related, client_id))
            self._relays[(link.name, message["id"])] = (client_id, task)
            return
        method = message["method"]
        params = message.get("params")
        if method in _LIST_CHANGED:
            # What policy knows of this upstream's names is stale: the next call lists them afresh.
            self.caller.listed_names.pop((link.name, _LIST_CHANGED[method]), None)
            self.caller.listing_pages.pop((link.name, _LIST_CHANGED[method]), None)
        if method == "notifications/cancelled" and isinstance(params, dict):
            cancelled_id = params.get("requestId")
            relay = self._relays.get((link.name, cancelled_id)) if isinstance(cancelled_id, (str, int)) else None
            if relay is None:
                return
            client_id, task = relay
            task.cancel()  # the upstream wants no answer any more
            params = {**params, "requestId": client_id}
        params = self.endpoint.rename_server_params(link.name, method, params)

        async def deliver(ex: Exchange) -> None:
            out: Message = {"jsonrpc": "2.0", "method": ex.method}
            if ex.params is not None:
                out["params"] = ex.params
            self.send_to_client(out, related)

        ex = self.exchange(method, params, None, link.name, deliver, direction=Direction.TO_CLIENT)
        await self.gateway.pipeline(ex)

    async def _relay_server_request(
        self, link: UpstreamLink, message: Message, related: Inflight | None, client_id: int
    ) -> None:

        async def deliver(ex: Exchange) -> Reply:
            return await self._request_client(client_id, ex.method, ex.params, related)

        try:
            ex = self.exchange(
                message["method"], message.get("params"), client_id, link.name, deliver, direction=Direction.TO_CLIENT
            )
            reply = await self.gateway.pipeline(ex)
            assert reply is not None
            with contextlib.suppress(UpstreamError):
                await link.respond(message["id"], reply)
        finally:
            self._relays.pop((link.name, message["id"]), None)

    async def _request_client(
        self, client_id: int, method: str, params: dict[str, Any] | None, related: Inflight | None
    ) -> Reply:
        """Send one request to the client under ``client_id`` and wait (bounded) for its reply body.

        Raises:
            UpstreamError: UPSTREAM_TIMEOUT when the client does not answer in time.
        """
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._client_requests[client_id] = future
        out: Message = {"jsonrpc": "2.0", "id": client_id, "method": method}
        if params is not None:
            out["params"] = params
        self.send_to_client(out, related)
        try:
            return await asyncio.wait_for(future, _CLIENT_REPLY_TIMEOUT_S)
        except TimeoutError:
            raise UpstreamError("the client did not answer in time", code=codes.UPSTREAM_TIMEOUT) from None
        finally:
            self._client_requests.pop(client_id, None)

    async def ask_client(self, method: str, params: dict[str, Any], related: Inflight | None = None) -> Reply:
        """Bastion's own request to this client (e.g. ``elicitation/create``), on ``related``'s stream.

        A caller that stops waiting (its own deadline, or the client's call was cancelled) tells
        the client with ``notifications/cancelled`` so it can dismiss the question.
        Raises:
            UpstreamError: UPSTREAM_TIMEOUT when the client does not answer in time.
        """
        client_id = next(self._client_ids)
        try:
            return await self._request_client(client_id, method, params, related)
        except (asyncio.CancelledError, UpstreamError):
            cancelled = {"requestId": client_id, "reason": "no longer needed"}
            self.send_to_client({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": cancelled}, related)
            raise

    def on_client_reply(self, message: Message) -> bool:
        """The client answered a request Bastion relayed to it; False if nobody waits for it."""
        request_id = message.get("id")
        future = self._client_requests.get(request_id) if isinstance(request_id, int) else None
        if future is None or future.done():
            return False
        future.set_result({k: v for k, v in message.items() if k in ("result", "error")})
        return True

    # -- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for link in self.links.values():
            await link.close()
        for stream in self.streams.values():
            stream.closed = True
        self.streams.clear()
