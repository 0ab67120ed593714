"""The two kinds of client endpoint and how each maps a client request onto upstream exchanges.

- ``ServerEndpoint`` (``/servers/{name}/mcp``) is transparent: every name, capability and
  result is the upstream's own, so a client cannot tell it from the upstream itself.
- ``FederatedEndpoint`` (``/mcp``) is Bastion speaking as one server in front of all upstreams,
  with the naming scheme of proxy/naming.py and merged capabilities and listings.
Every upstream-bound request becomes an Exchange and runs the whole pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import TYPE_CHECKING, Any, Protocol

from bastion import __version__
from bastion.errors import DenialError, ProtocolError, UpstreamError
from bastion.exchange import Exchange, Reply
from bastion.jsonrpc import codes
from bastion.jsonrpc.envelope import Message, error_body
from bastion.proxy import naming
from bastion.proxy.versions import LATEST_VERSION, SUPPORTED_VERSIONS
from bastion.upstream.link import UpstreamLink

if TYPE_CHECKING:
    from bastion.proxy.session import DownstreamSession

_MAX_LIST_PAGES = 100
_LISTING_FOR = {"tools/call": ("tools/list", "tool"), "prompts/get": ("prompts/list", "prompt")}


def target_name(method: str, params: dict[str, Any] | None) -> str | None:
    """The tool/prompt name or resource URI a request is about, if any."""
    if not params:
        return None
    if method in ("tools/call", "prompts/get"):
        name = params.get("name")
    elif method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
        name = params.get("uri")
    elif method == "completion/complete":
        ref = params.get("ref") or {}
        name = ref.get("name") or ref.get("uri") if isinstance(ref, dict) else None
    else:
        return None
    return name if isinstance(name, str) else None


class Endpoint(Protocol):
    async def handle_request(self, session: DownstreamSession, message: Message) -> Reply: ...

    async def handle_notification(self, session: DownstreamSession, message: Message) -> None: ...

    def rename_server_params(self, upstream: str, method: str, params: dict[str, Any] | None) -> dict[str, Any] | None: ...


async def _run(
    session: DownstreamSession,
    link: UpstreamLink,
    method: str,
    params: dict[str, Any] | None,
    request_id: Any,
    shown_name: str | None = None,
) -> Reply:
    """Run one upstream-bound exchange through the pipeline (``shown_name``: the name as the client wrote it)."""
    listing = _LISTING_FOR.get(method)
    listing_failed = False
    if listing is not None and (link.name, listing[1]) not in session.caller.listed_names:
        # Policy must know the upstream's tools or prompts (annotations, and which names exist at
        # all) before it decides on a call, even when the client never listed them. The names
        # count only once every page was read (stages/policy.py); otherwise the call is refused.
        await _list_all(session, link, listing[0], request_id)
        listing_failed = (link.name, listing[1]) not in session.caller.listed_names
    inflight = session.inflight_for(request_id)

    async def deliver(ex: Exchange) -> Reply:
        if ex.method == "initialize":
            return await link.initialize(ex.params or {})
        return await link.request(ex.method, ex.params, context=inflight)

    ex = session.exchange(method, params, request_id, link.name, deliver, name=target_name(method, params))
    ex.shown_name = shown_name
    ex.listing_failed = listing_failed
    ex.ask_client = functools.partial(session.ask_client, related=inflight)
    if inflight is not None:
        ex.traceparent = inflight.traceparent
        if inflight.progress_token is not None:
            ex.progress = _progress_sender(session, inflight.progress_token)
    reply = await session.gateway.pipeline(ex)
    assert reply is not None
    return reply


async def _list_all(session: DownstreamSession, link: UpstreamLink, method: str, request_id: Any) -> list[dict[str, Any]]:
    """Every item of one upstream's listing as this caller may see it: all pages, each through the pipeline."""
    key = naming.LIST_KEYS[method]
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(_MAX_LIST_PAGES):
        reply = await _run(session, link, method, {"cursor": cursor} if cursor else None, request_id)
        if "result" not in reply:
            break
        items.extend(reply["result"].get(key) or [])
        cursor = reply["result"].get("nextCursor")
        if not cursor:
            break
    return items


def _progress_sender(session: DownstreamSession, token: Any) -> Any:
    count = 0

    async def send(message: str) -> None:
        nonlocal count
        count += 1
        session.send_to_client(
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": count, "message": message}}
        )

    return send


def _link(session: DownstreamSession, upstream: str) -> UpstreamLink:
    link = session.links.get(upstream)
    if link is None:
        link = session.gateway.upstreams.link(upstream, session.on_server_message, session.caller.principal)
        session.links[upstream] = link
    return link


class ServerEndpoint:
    """One upstream behind ``/servers/{name}/mcp``, every name unchanged."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream

    async def handle_request(self, session: DownstreamSession, message: Message) -> Reply:
        method = message["method"]
        link = _link(session, self.upstream)
        reply = await _run(session, link, method, message.get("params"), message["id"])
        if method == "initialize" and "result" in reply:
            version = reply["result"].get("protocolVersion")
            if version not in SUPPORTED_VERSIONS:
                raise UpstreamError(f"upstream {self.upstream!r} chose protocol version {version!r}, which Bastion does not serve")
        return reply

    async def handle_notification(self, session: DownstreamSession, message: Message) -> None:
        if message["method"] == "notifications/initialized":
            return  # the link already sent it when the upstream answered initialize
        link = session.links.get(self.upstream)
        if link is not None:
            await link.notify(message["method"], message.get("params"))

    def rename_server_params(self, upstream: str, method: str, params: dict[str, Any] | None) -> dict[str, Any] | None:
        return params


class FederatedEndpoint:
    """All upstreams behind ``/mcp``: Bastion answers as one server and namespaces every name."""

    def __init__(self, upstreams: list[str]) -> None:
        self.upstreams = upstreams

    async def handle_request(self, session: DownstreamSession, message: Message) -> Reply:
        method = message["method"]
        params = message.get("params")
        request_id = message["id"]
        if method == "initialize":
            return await self._initialize(session, params or {}, request_id)
        if method == "ping":
            return {"result": {}}
        if method in naming.LIST_KEYS:
            return await self._list(session, method, request_id)
        if method == "logging/setLevel":
            await asyncio.gather(*(_run(session, link, method, params, request_id) for link in session.links.values()))
            return {"result": {}}
        if method in ("tools/call", "prompts/get"):
            qualified = str((params or {}).get("name", ""))
            upstream, name = naming.split_name(qualified, self.upstreams, "tool" if method == "tools/call" else "prompt")
            link = await self._ready(session, upstream)
            return await _run(session, link, method, {**(params or {}), "name": name}, request_id, shown_name=qualified)
        if method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
            upstream, uri = naming.split_uri(str((params or {}).get("uri", "")), self.upstreams)
            reply = await _run(session, await self._ready(session, upstream), method, {**(params or {}), "uri": uri}, request_id)
            if method == "resources/read" and "result" in reply:
                reply = {"result": naming.qualify_contents(upstream, reply["result"])}
            return reply
        if method == "completion/complete":
            return await self._complete(session, params or {}, request_id)
        raise ProtocolError(f"Method not found: {method}", code=codes.METHOD_NOT_FOUND)

    async def _initialize(self, session: DownstreamSession, params: dict[str, Any], request_id: Any) -> Reply:
        requested = params.get("protocolVersion")
        version = requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION
        upstream_params = {**params, "protocolVersion": version}
        links = []
        for name in self.upstreams:
            with contextlib.suppress(DenialError):  # no upstream credential for this caller: not offered
                links.append(_link(session, name))
        replies = await asyncio.gather(
            *(_run(session, link, "initialize", upstream_params, request_id) for link in links), return_exceptions=True
        )
        capabilities: dict[str, Any] = {}
        instructions = []
        for name, reply in zip([link.name for link in links], replies, strict=True):
            if not isinstance(reply, dict) or "result" not in reply:
                session.links.pop(name, None)
                continue
            result = reply["result"]
            caps = result.get("capabilities") or {}
            for key in ("tools", "prompts"):
                if key in caps:
                    capabilities[key] = {"listChanged": True}
            if "resources" in caps:
                merged = capabilities.setdefault("resources", {"listChanged": True})
                if (caps["resources"] or {}).get("subscribe"):
                    merged["subscribe"] = True
            for key in ("logging", "completions"):
                if key in caps:
                    capabilities[key] = {}
            if result.get("instructions"):
                instructions.append(f"[{name}] {result['instructions']}")
        if not session.links:
            raise UpstreamError("no upstream could be initialized")
        result = {"protocolVersion": version, "capabilities": capabilities, "serverInfo": {"name": "bastion", "version": __version__}}
        if instructions:
            result["instructions"] = "\n\n".join(instructions)
        return {"result": result}

    async def _ready(self, session: DownstreamSession, upstream: str) -> UpstreamLink:
        link = session.links.get(upstream)
        if link is not None:
            return link
        raise UpstreamError(f"upstream {upstream!r} is unavailable in this session")

    async def _list(self, session: DownstreamSession, method: str, request_id: Any) -> Reply:
        key = naming.LIST_KEYS[method]
        capability = key if key != "resourceTemplates" else "resources"

        async def one(link: UpstreamLink) -> list[dict[str, Any]]:
            caps = (link.init_result or {}).get("capabilities") or {}
            if capability not in caps:
                return []
            return naming.qualify_listing(link.name, method, await _list_all(session, link, method, request_id))

        results = await asyncio.gather(*(one(link) for link in list(session.links.values())), return_exceptions=True)
        merged = [item for r in results if isinstance(r, list) for item in r]
        return {"result": {key: merged}}

    async def _complete(self, session: DownstreamSession, params: dict[str, Any], request_id: Any) -> Reply:
        ref = params.get("ref") or {}
        if ref.get("type") == "ref/prompt":
            upstream, name = naming.split_name(str(ref.get("name", "")), self.upstreams, "prompt")
            ref = {**ref, "name": name}
        elif ref.get("type") == "ref/resource":
            upstream, uri = naming.split_uri(str(ref.get("uri", "")), self.upstreams)
            ref = {**ref, "uri": uri}
        else:
            return {"error": error_body(codes.INVALID_PARAMS, "Invalid params: unknown completion ref type")}
        return await _run(session, await self._ready(session, upstream), "completion/complete", {**params, "ref": ref}, request_id)

    async def handle_notification(self, session: DownstreamSession, message: Message) -> None:
        if message["method"] == "notifications/initialized":
            return
        for link in list(session.links.values()):
            await link.notify(message["method"], message.get("params"))

    def rename_server_params(self, upstream: str, method: str, params: dict[str, Any] | None) -> dict[str, Any] | None:
        if method == "notifications/resources/updated" and params and isinstance(params.get("uri"), str):
            return {**params, "uri": naming.qualify_uri(upstream, params["uri"])}
        return params
