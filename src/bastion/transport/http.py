"""Client-facing MCP Streamable HTTP (MCP 2025-11-25 §Transports), as plain ASGI.

HTTP-plane checks run before any JSON-RPC parsing: Host/Origin (DNS rebinding), credentials
(401 + WWW-Authenticate), content type (415), Accept (406), body size (413), session (400/404/403)
and protocol version (400). A POST carrying requests is answered with JSON when the replies are
all that comes back, and upgraded to an SSE stream as soon as anything else must go first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.types import Receive, Scope, Send

from bastion.audit.canonical import CanonicalEncodingError
from bastion.errors import AuthenticationError, BastionError, ProtocolError, StorageError
from bastion.exchange import CallerContext, Exchange
from bastion.identity.principal import Principal
from bastion.jsonrpc import codes
from bastion.jsonrpc.envelope import Message, MessageKind, classify, dumps, parse_body, render_error
from bastion.proxy.gateway import Gateway
from bastion.proxy.naming import ALL_UPSTREAMS
from bastion.proxy.session import DownstreamSession
from bastion.proxy.streams import ReplyStream, parse_event_id
from bastion.proxy.versions import BATCH_VERSIONS, DEFAULT_VERSION_WITHOUT_HEADER, SUPPORTED_VERSIONS
from bastion.transport.sse import render_event
from bastion.transport.tls import client_cert_subject

log = logging.getLogger("bastion.http")

Authenticate = Callable[[Mapping[str, str], str, str | None, str | None], Awaitable[Principal]]
"""(lower-cased headers, request path, TCP peer host, verified client certificate subject) → the caller,
or AuthenticationError."""
RecordRefusal = Callable[[CallerContext, str, dict[str, Any], bool], Awaitable[None]]
"""(caller, reason, detail, whether the caller was identified) → records a refusal at the HTTP plane."""

_KEEPALIVE_S = 15.0


class HttpError(Exception):
    """An HTTP-plane refusal: status, JSON-RPC error code and message, extra headers."""

    def __init__(self, status: int, code: int, message: str, headers: dict[str, str] | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.reason = reason or message


class McpHttpEndpoint:
    """ASGI app for ``/mcp`` (federated) and ``/servers/{name}/mcp`` (one upstream)."""

    def __init__(self, gateway: Gateway, authenticate: Authenticate, record_refusal: RecordRefusal) -> None:
        self.gateway = gateway
        self._authenticate = authenticate
        self._record_refusal = record_refusal
        http = gateway.settings.http
        self._allowed_hosts = {h.lower() for h in http.allowed_hosts}
        self._allowed_origins = {o.lower() for o in http.allowed_origins}
        tls = gateway.settings.tls
        self._client_subject = tls.client_subject if tls is not None else "dn"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        upstream = scope.get("path_params", {}).get("name")
        caller = CallerContext(
            principal=Principal.anonymous(),
            session_id=headers.get("mcp-session-id"),
            endpoint=scope["path"],
            source_address=(scope.get("client") or ("", 0))[0] or None,
            user_agent=headers.get("user-agent"),
        )
        identified = False
        try:
            endpoint = self.gateway.endpoint_for(upstream)
            if endpoint is None:
                raise HttpError(404, codes.INVALID_REQUEST, f"Not Found: no upstream named {upstream!r}")
            self._check_host_and_origin(headers)
            try:
                caller.principal = await self._authenticate(
                    headers, scope["path"], caller.source_address, client_cert_subject(scope, self._client_subject)
                )
            except AuthenticationError as exc:
                raise HttpError(
                    int(exc.data.get("status_code", 401)),
                    codes.INVALID_REQUEST,
                    "Unauthorized",
                    {"www-authenticate": exc.data.get("www_authenticate", "Bearer")},
                    reason=str(exc.data.get("reason", "unauthenticated")),
                ) from None
            identified = True
            method = scope["method"]
            if method == "POST":
                await self._post(scope, receive, send, headers, caller, endpoint)
            elif method == "GET":
                await self._get(receive, send, headers, caller)
            elif method == "DELETE":
                session = self._session(headers, caller)
                try:
                    await self.gateway.close_session(session.id)
                except StorageError:
                    raise HttpError(503, codes.AUDIT_UNAVAILABLE,
                                    "Service Unavailable: the audit store cannot record; the session stays open") from None
                await _respond(send, 200, b"", {})
            else:
                raise HttpError(405, codes.INVALID_REQUEST, "Method Not Allowed", {"allow": "GET, POST, DELETE"})
        except HttpError as exc:
            if exc.status >= 400:
                with contextlib.suppress(StorageError):  # refused either way; the log says why it could not record
                    await self._record_refusal(caller, exc.reason, {"http_status": exc.status}, identified)
            body = dumps(render_error(None, exc.code, exc.message))
            await _respond(send, exc.status, body, {"content-type": "application/json", **exc.headers})

    # -- checks --------------------------------------------------------------------------------

    def _check_host_and_origin(self, headers: Mapping[str, str]) -> None:
        host = headers.get("host", "").lower()
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if "*" not in self._allowed_hosts and host not in self._allowed_hosts and hostname not in self._allowed_hosts:
            raise HttpError(421, codes.INVALID_REQUEST, "Misdirected Request: Host not allowed")
        origin = headers.get("origin")
        if origin is None or "*" in self._allowed_origins or origin.lower() in self._allowed_origins:
            return
        origin_host = origin.lower().split("://", 1)[-1].rstrip("/")
        if origin_host != host and origin_host.rsplit(":", 1)[0] not in self._allowed_hosts:
            raise HttpError(403, codes.INVALID_REQUEST, "Forbidden: Origin not allowed")

    def _session(self, headers: Mapping[str, str], caller: CallerContext) -> DownstreamSession:
        session_id = headers.get("mcp-session-id")
        if not session_id:
            raise HttpError(400, codes.INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required")
        session = self.gateway.sessions.get(session_id)
        if session is None:
            raise HttpError(404, codes.INVALID_REQUEST, "Session not found")
        owner = session.caller.principal
        if (owner.subject, owner.issuer) != (caller.principal.subject, caller.principal.issuer):
            raise HttpError(
                403, codes.SESSION_FORBIDDEN, "Forbidden: session belongs to another identity",
                reason=f"session {session_id[:8]}… presented by another identity (owner {owner.subject})",
            )
        if session.endpoint is not self.gateway.endpoint_for(_upstream_of(caller.endpoint)):
            raise HttpError(404, codes.INVALID_REQUEST, "Session not found")
        version = headers.get("mcp-protocol-version")
        if version is not None and version not in SUPPORTED_VERSIONS:
            raise HttpError(400, codes.INVALID_REQUEST, f"Bad Request: Unsupported protocol version: {version}")
        session.last_used = time.monotonic()
        return session

    # -- POST ----------------------------------------------------------------------------------

    async def _post(
        self, scope: Scope, receive: Receive, send: Send, headers: Mapping[str, str], caller: CallerContext, endpoint: Any
    ) -> None:
        if not headers.get("content-type", "").lower().startswith("application/json"):
            raise HttpError(415, codes.INVALID_REQUEST, "Unsupported Media Type: Content-Type must be application/json")
        accept = headers.get("accept", "")
        if not ("application/json" in accept or "*/*" in accept) or not ("text/event-stream" in accept or "*/*" in accept):
            raise HttpError(406, codes.INVALID_REQUEST, "Not Acceptable: Accept must list application/json and text/event-stream")
        body = await _read_body(receive, self.gateway.settings.http.max_body_bytes)
        try:
            parsed = parse_body(body)
        except ProtocolError as exc:
            raise HttpError(400, exc.code, exc.public_message) from None
        batch = isinstance(parsed, list)
        messages: list[Message] = parsed if isinstance(parsed, list) else [parsed]
        kinds = [classify(m) for m in messages]

        if any(m.get("method") == "initialize" for m in messages):
            if batch:
                raise HttpError(400, codes.INVALID_REQUEST, "Invalid Request: initialize must not be part of a batch")
            if headers.get("mcp-session-id"):
                raise HttpError(400, codes.INVALID_REQUEST, "Bad Request: initialize must not carry a session id")
            if not self.gateway.accepting or len(self.gateway.sessions) >= self.gateway.settings.http.max_sessions:
                raise HttpError(503, codes.INVALID_REQUEST, "Service Unavailable: no new sessions accepted")
            params = messages[0].get("params") or {}
            caller.client_info = params.get("clientInfo") if isinstance(params.get("clientInfo"), dict) else None
            caller.protocol_version = params.get("protocolVersion")
            capabilities = params.get("capabilities")
            caller.client_capabilities = capabilities if isinstance(capabilities, dict) else None
            session = self.gateway.open_session(caller, endpoint)
            try:
                await self.gateway.recorder.session(caller, opened=True)
            except StorageError:
                await self.gateway.discard_session(session.id)
                raise HttpError(503, codes.AUDIT_UNAVAILABLE, "Service Unavailable: the audit store cannot record") from None
        elif not headers.get("mcp-session-id") and any(m.get("method") == "server/discover" for m in messages):
            # A 2026-07-28 client probing: answer as a handshake-era server so it falls back to initialize.
            # Recorded before it leaves, like every answer; if it cannot be, the answer is that failure.
            code, text = codes.METHOD_NOT_FOUND, "Method not found: server/discover"
            try:
                await self.gateway.record_unrouted(caller, messages[0], {"error": {"code": code, "message": text}})
            except StorageError:
                raise HttpError(503, codes.AUDIT_UNAVAILABLE, "Service Unavailable: the audit store cannot record") from None
            except CanonicalEncodingError:
                raise HttpError(400, codes.INVALID_REQUEST, "Invalid Request: the id has no record form") from None
            await _respond_json(send, 200, render_error(messages[0].get("id"), code, text))
            return
        else:
            session = self._session(headers, caller)
            version = headers.get("mcp-protocol-version", DEFAULT_VERSION_WITHOUT_HEADER)
            if batch and version not in BATCH_VERSIONS:
                raise HttpError(400, codes.INVALID_REQUEST, f"Invalid Request: batches are not allowed in protocol {version}")

        requests = []
        for message, kind in zip(messages, kinds, strict=True):
            if kind is MessageKind.REQUEST:
                requests.append(message)
            elif kind is MessageKind.NOTIFICATION:
                await self._notification(session, message)
            elif not session.on_client_reply(message):
                try:
                    await self.gateway.recorder.stray_reply(session.caller, message)
                except StorageError:
                    raise HttpError(503, codes.AUDIT_UNAVAILABLE, "Service Unavailable: the audit store cannot record") from None
                except CanonicalEncodingError:
                    raise HttpError(400, codes.INVALID_REQUEST, "Invalid Request: the id has no record form") from None
        if not requests:
            await _respond(send, 202, b"", {})
            return

        stream = session.open_stream([m["id"] for m in requests])
        for message in requests:
            session.start_request(message, stream, _traceparent(headers))
        extra = {"mcp-session-id": session.id}
        first = await stream.next()
        items = [item for item in (first, *stream.drain()) if item is not None]
        if stream.finished and all("method" not in m for _, m, _ in items):
            session.release_stream(stream)
            if not items:  # every request it carried was cancelled: there is nothing to answer
                await _respond(send, 202, b"", extra)
                return
            payload = dumps([m for _, m, _ in items]) if batch else items[0][2]
            await _respond(send, 200, payload, {"content-type": "application/json", **extra})
            return
        await self._stream(receive, send, session, stream, items, extra)

    async def _notification(self, session: DownstreamSession, message: Message) -> None:
        method = message["method"]
        params = message.get("params")

        async def deliver(ex: Exchange) -> None:
            if ex.method == "notifications/cancelled":
                session.cancel_request((ex.params or {}).get("requestId"))  # type: ignore[arg-type]
                return None
            await session.endpoint.handle_notification(session, {"jsonrpc": "2.0", "method": ex.method, "params": ex.params})
            return None

        upstream = _upstream_of(session.caller.endpoint) or ALL_UPSTREAMS
        ex = session.exchange(method, params if isinstance(params, dict) else None, None, upstream, deliver)
        try:
            await self.gateway.pipeline(ex)
        except BastionError:
            log.info("client notification not delivered", extra={"session": session.id, "method": method})

    # -- GET -----------------------------------------------------------------------------------

    async def _get(self, receive: Receive, send: Send, headers: Mapping[str, str], caller: CallerContext) -> None:
        if "text/event-stream" not in headers.get("accept", "") and "*/*" not in headers.get("accept", ""):
            raise HttpError(406, codes.INVALID_REQUEST, "Not Acceptable: Accept must list text/event-stream")
        session = self._session(headers, caller)
        replay: list[tuple[int, Message | None, bytes]] = []
        stream: ReplyStream | None = None
        last_event = headers.get("last-event-id")
        if last_event:
            parsed = parse_event_id(last_event)
            stream = session.streams.get(parsed[0]) if parsed else None
            if stream is not None and parsed is not None:
                replay = [(n, None, data) for n, data in stream.replay_after(parsed[1])]
                stream.attached = True
        if stream is None:
            stream = session.open_stream([])
        await self._stream(receive, send, session, stream, replay, {"mcp-session-id": session.id})

    # -- SSE -----------------------------------------------------------------------------------

    async def _stream(
        self,
        receive: Receive,
        send: Send,
        session: DownstreamSession,
        stream: ReplyStream,
        first_items: list[tuple[int, Any, bytes]],
        extra_headers: dict[str, str],
    ) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _encode_headers({
            "content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no", **extra_headers,
        })})
        disconnected = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, disconnected))
        try:
            for seq, _, data in first_items:
                await _send_chunk(send, render_event(data, stream.event_id(seq)))
            stopping = self.gateway.stopping
            while not stream.finished and not disconnected.is_set() and not session.closed:
                if stream.is_get and stopping.is_set():
                    break
                next_item = asyncio.create_task(stream.next())
                gone = asyncio.create_task(disconnected.wait())
                stop = asyncio.create_task(stopping.wait())
                done, _ = await asyncio.wait(
                    {next_item, gone, stop}, timeout=_KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
                )
                gone.cancel()
                stop.cancel()
                if next_item not in done:
                    next_item.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await next_item
                    if not done:
                        await _send_chunk(send, b": keepalive\n\n")
                    continue
                item = next_item.result()
                if item is not None:
                    await _send_chunk(send, render_event(item[2], stream.event_id(item[0])))
            if not disconnected.is_set():
                for seq, _, data in stream.drain():
                    await _send_chunk(send, render_event(data, stream.event_id(seq)))
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            session.release_stream(stream)


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def _traceparent(headers: Mapping[str, str]) -> str | None:
    """The W3C ``traceparent`` header if well-formed (it goes into audit records verbatim)."""
    value = headers.get("traceparent", "").strip().lower()
    return value if _TRACEPARENT.match(value) else None


def _upstream_of(endpoint_path: str) -> str | None:
    parts = endpoint_path.strip("/").split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "servers" else None


async def _watch_disconnect(receive: Receive, disconnected: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            disconnected.set()
            return


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, codes.INVALID_REQUEST, "Bad Request: client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, codes.INVALID_REQUEST, f"Payload Too Large: the limit is {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _encode_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def _respond(send: Send, status: int, body: bytes, headers: Mapping[str, str]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _encode_headers({**headers, "content-length": str(len(body))})})
    await send({"type": "http.response.body", "body": body})


async def _respond_json(send: Send, status: int, message: Message) -> None:
    await _respond(send, status, dumps(message), {"content-type": "application/json"})


async def _send_chunk(send: Send, chunk: bytes) -> None:
    await send({"type": "http.response.body", "body": chunk, "more_body": True})
